"""Names that ``t2i``'s parsers offer, defined without torch or Lightning so that parsing a command line
imports neither; the modules that act on them import them from here.

(The diffusion settings' names are :mod:`t2i_lightning.diffusion.names`: that package imports nothing of
this one.)
"""

from __future__ import annotations

AUTO = "auto"
"""``--device`` and ``--precision``'s default: decided for the accelerator actually used (:mod:`t2i_lightning.accelerator`)."""
DEVICE_HELP = "auto (the CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N"
"""What ``--device`` takes, in the help and in the errors of :func:`t2i_lightning.accelerator.inference_device`."""
SUBCOMMANDS = ("fit", "validate", "test", "predict")
"""The LightningCLI subcommands of ``t2i`` and ``lightning`` (:mod:`t2i_lightning.training.lightning_cli`)."""
