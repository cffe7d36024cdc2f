"""The learned reverse-process variance of Nichol & Dhariwal 2021 ("Improved DDPM", sec. 3.1)."""

from __future__ import annotations

from torch import Tensor

from .schedules import NoiseSchedule, extract


def split_learned_variance(raw_output: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Split a network output of 2C channels (dim 1) into (prediction, variance interpolation).

    Improved DDPM (sec. 3.1) doubles the output channels: the first C carry the ε/x_0/v prediction,
    the last C the per-dimension variance interpolation v ∈ [−1, 1] of eq. 15. C is ``like.shape[1]``.
    """
    if like.ndim < 2:
        raise ValueError(f"learned variance needs a channel dimension (dim 1), got shape {tuple(like.shape)}")
    channels = like.shape[1]
    if raw_output.ndim != like.ndim or raw_output.shape[1] != 2 * channels:
        raise ValueError(
            f"learned variance needs an output with 2*{channels} channels in dim 1, got shape "
            f"{tuple(raw_output.shape)}"
        )
    return raw_output[:, :channels], raw_output[:, channels:]


def learned_range_log_variance(schedule: NoiseSchedule, t: Tensor, raw: Tensor, like: Tensor) -> Tensor:
    """log Σ_θ(x_t, t) = v log β_t + (1 − v) log β̃_t (Improved DDPM eq. 15), with v = (raw + 1)/2.

    ``raw`` is the network's variance output, nominally in [−1, 1]; log β̃_t is the clipped posterior
    log variance. ``like`` gives the dtype, device and rank for the gathered coefficients. The result
    has ``raw``'s shape.
    """
    fraction = (raw + 1) / 2
    log_max = extract(schedule.log_betas, t, like)
    log_min = extract(schedule.posterior_log_variance_clipped, t, like)
    return fraction * log_max + (1 - fraction) * log_min
