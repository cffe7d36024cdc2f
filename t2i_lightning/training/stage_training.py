"""Training plumbing shared by the generative stages (decoder, upsampler, score model, captioner).

:class:`StageTraining` gives a LightningModule, from its hyperparameters ``lr``, ``weight_decay``,
``warmup_steps``, ``lr_decay`` and, when it has them, ``ema_decay`` and ``ema_start_step``:
AdamW with weight decay on matrices only and a per-step warmup-then-decay schedule, the global
gradient norm logged before each optimizer step (``train/grad_norm``, the norm the clipping uses), and
its callbacks: its ``samples`` grid (if any) and the weights' EMA (:class:`~t2i_lightning.training.ema.FusedEMA`),
in that order, because the EMA callback swaps the raw weights back at the end of validation, after the
grid has been drawn with the EMA weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import lightning.pytorch as pl
import torch

from .ema import FusedEMA
from .optim import adamw_with_warmup, decay_groups


@dataclass(frozen=True)
class OptimizerDefaults:
    """The optimizer, schedule and EMA settings of the generative stages (decoder, text decoder, upsampler,
    score model), written once: their constructors default to these, and the stage configs set only what
    differs (``stages/paper/`` sets the study's lr 3e-4, warmup 1000, EMA 0.9999)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_decay: str = "linear"
    ema_decay: float = 0.995
    ema_start_step: int = 200


GENERATIVE = OptimizerDefaults()


class StageTraining:
    """Mixin for a ``pl.LightningModule`` with the hyperparameters above and a ``samples`` attribute."""

    adam_betas: tuple[float, float] = (0.9, 0.999)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Log the global gradient norm before clipping (``train/grad_norm``) and clip by that same norm
        (the trainer's ``gradient_clip_val``), so the log costs no second pass over the gradients."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.log("train/grad_norm", norm)
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)

    def optimizer_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """The named parameters in the order the optimizer holds them (its state in a checkpoint is laid out
        in this order, and the gradient norm is summed in it)."""
        return self.named_parameters()

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        return adamw_with_warmup(
            decay_groups(self.optimizer_parameters(), hp.weight_decay), hp.lr, hp.weight_decay, hp.warmup_steps,
            int(self.trainer.estimated_stepping_batches), betas=self.adam_betas, decay=hp.lr_decay,
        )  # fmt: skip

    def configure_callbacks(self) -> list[pl.Callback]:
        callbacks = [self.samples] if self.samples is not None else []
        if "ema_decay" in self.hparams:
            start = self.hparams.ema_start_step
            callbacks.append(FusedEMA(self.hparams.ema_decay, start_step=start or None))
        return callbacks


@contextlib.contextmanager
def fixed_seed(seed: int) -> Iterator[None]:
    """Run the block with torch's global generator seeded by ``seed``, then restore its state: validation
    draws the same timesteps and noise every time (comparable curves) without disturbing training's stream."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
