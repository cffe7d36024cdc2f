"""Checkpoint on SIGTERM (preemption), so that re-running the same command resumes where it stopped.

Lightning turns SIGTERM into a ``SIGTERMException`` raised at the next batch boundary (all ranks
together under DDP) and calls every callback's ``on_exception``. This callback then writes the
run's ``last.ckpt`` (the file :mod:`t2i_lightning.training.resume` resumes from) with the current step,
optimizer and EMA state. Other exceptions write nothing: after a crash the last good checkpoint
stays as it was.

It also writes ``last.ckpt`` when training ends at a step no checkpoint was written at: Lightning's
``ModelCheckpoint`` saves on validation, and at the end only if it saved nothing during the run, so
a run resumed off the validation grid (e.g. after a SIGTERM at step 3 with validation every 2 steps)
ended with ``last.ckpt`` a step behind and lost its final steps.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    """Where the run's ModelCheckpoint writes its ``last`` checkpoint, or None without one."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
        return None
    return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM, save ``last.ckpt`` before the process exits; at the end of training, save it if
    the final step has no checkpoint (see the module docstring)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = last_checkpoint_path(trainer)
        saved_step = getattr(trainer.checkpoint_callback, "_last_global_step_saved", None)
        if path is not None and saved_step != trainer.global_step:
            trainer.save_checkpoint(path)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = last_checkpoint_path(trainer)
        if path is None:
            return
        trainer.save_checkpoint(path)
        rank_zero_info(f"SIGTERM at step {trainer.global_step}: saved {path}; run the same command to resume")
