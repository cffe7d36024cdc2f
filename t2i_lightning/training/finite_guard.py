"""Stop (or skip the step) when the loss or a gradient is NaN or infinite.

Checked after the backward pass and before the optimizer step, from the global gradient norm
(a non-finite loss always gives non-finite gradients). ``action="stop"`` raises
:class:`NonFiniteLossError` naming the step before the weights are touched, so the checkpoints
already written stay the last good ones (ModelCheckpoint does not save on exceptions).
``action="skip"`` drops that step's gradients (the optimizer leaves parameters without a gradient
alone), counts it in ``train/nonfinite_skipped``, and stops after ``max_consecutive`` skipped
steps in a row. Runs with an fp16 gradient scaler are left alone: it skips inf steps itself.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import rank_zero_warn

from .preemption import last_checkpoint_path

ACTIONS = ("stop", "skip")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


class NonFiniteGuard(pl.Callback):
    """Args:
    action: "stop" (default) or "skip" (see the module docstring).
    max_consecutive: with "skip", how many non-finite steps in a row end the run anyway.
    """

    def __init__(self, action: str = "stop", max_consecutive: int = 20):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.action, self.max_consecutive = action, max_consecutive
        self.skipped = self.consecutive = 0

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        plugin = trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self.consecutive = 0
            return
        step = trainer.global_step
        if self.action == "stop" or self.consecutive + 1 >= self.max_consecutive:
            what = "a" if self.action == "stop" else f"{self.max_consecutive} consecutive"
            last = last_checkpoint_path(trainer)
            kept = f"; the last good checkpoint is {last}" if last is not None and last.exists() else ""
            raise NonFiniteLossError(
                f"{what} non-finite loss or gradient at step {step}; stopped before the optimizer step{kept}. "
                "Lower the learning rate or check the data; NonFiniteGuard's action: skip (stages/_trainer.yaml) "
                "skips such steps instead"
            )
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped += 1
        self.consecutive += 1
        rank_zero_warn(
            f"Non-finite loss or gradient at step {step}: the step is skipped ({self.skipped} so far)"
        )
        pl_module.log("train/nonfinite_skipped", float(self.skipped))
