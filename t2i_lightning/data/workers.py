"""DataLoader workers that do not die before their main process on SIGTERM.

A scheduler (SLURM, ``docker stop``) signals a job's whole process group. A DataLoader worker dying
of that SIGTERM made the main process raise "DataLoader worker ... is killed by signal" before it could
save (no checkpoint, a traceback). Workers now ignore SIGTERM; the main process saves ``last.ckpt``
(:class:`~t2i_lightning.training.preemption.PreemptionCheckpoint`) and stops them itself (and torch's
worker watchdog ends a worker whose main process has gone).
"""

from __future__ import annotations

import signal


def detach_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: ignore SIGTERM (the main process ends the workers)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
