"""Optimizers and learning-rate schedules shared by the stages."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final_fraction: float = 0.0) -> float:
    """LR multiplier: linear warmup from 0 to 1 over ``warmup_steps``, then cosine decay to ``final_fraction``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_linear(step: int, warmup_steps: int, total_steps: int, final_fraction: float = 0.0) -> float:
    """LR multiplier: linear warmup from 0 to 1 over ``warmup_steps``, then linear decay to ``final_fraction``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 1.0 - (1.0 - final_fraction) * progress


DECAYS = {"cosine": warmup_cosine, "linear": warmup_linear}


def adamw_with_warmup(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    betas: tuple[float, float] = (0.9, 0.98),
    decay: str = "cosine",
) -> dict:
    """AdamW with a per-step warmup then ``decay`` ("cosine" or "linear") schedule, in Lightning's
    ``configure_optimizers`` format."""
    if decay not in DECAYS:
        raise ValueError(f"Unknown learning-rate decay {decay!r}; use one of {', '.join(DECAYS)}")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    multiplier = DECAYS[decay]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: multiplier(step, warmup_steps, max(total_steps, warmup_steps + 1))
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def decay_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Parameter groups, in the given order: weight decay on matrices, none on biases, norms, embeddings'
    scales and temperatures."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "logit_scale" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
