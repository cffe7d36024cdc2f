"""Training plumbing around the stages: the LightningCLI wrapper (``t2i fit``), resuming from the newest
good checkpoint, atomic checkpoint I/O, the optimizer and its schedule, the weights' EMA, and the
training-only callbacks (preemption checkpoint, non-finite loss guard, skipped-sample counts).
Imports only ``data/`` and ``registry``; the stages import it, never the reverse."""
