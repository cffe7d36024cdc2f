"""Guidance: ways to steer a sampler without changing the network.

Each is either a wrapper that returns a new model function (classifier-free guidance), a transform of
x̂_0 (thresholding), a nudge of x_t (image guidance) or a ``cond_fn`` whose output the sampler adds to
the reverse-step mean (gradient guidance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Conditioning = Tensor | dict[str, Tensor]


def _concat_conditioning(cond: Conditioning, null_cond: Conditioning) -> Conditioning:
    """Stack conditional and unconditional inputs along the batch (per key for dicts)."""
    if isinstance(cond, dict):
        if not isinstance(null_cond, dict) or cond.keys() != null_cond.keys():
            raise ValueError("cond and null_cond must both be dicts with the same keys")
        return {key: torch.cat([cond[key], null_cond[key]]) for key in cond}
    return torch.cat([cond, null_cond])


def classifier_free_guidance(
    model: Callable[[Tensor, Tensor, Conditioning], Tensor],
    cond: Conditioning,
    null_cond: Conditioning,
    scale: float,
    *,
    eps_channels: int | None = None,
    batched: bool = True,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier-free guidance (Ho & Salimans 2021, eq. 6) as a model function f(x, t).

    f runs ``model(x_in, t_in, cond_in)`` once on the doubled batch ([x, x], [t, t], [cond, null_cond])
    and returns ε̃ = ε_u + s (ε_c − ε_u) on the first ``eps_channels`` channels (all when None),
    written as ε_c + (s − 1)(ε_c − ε_u) so that s = 1 gives the conditional output exactly (the paper's
    w is s − 1). Remaining
    channels (a learned variance) come from the conditional half. ``batched=False`` runs the two
    halves as two forwards instead (half the peak memory; slower: ``t2i bench`` measures by how much).
    """

    def outputs(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        if not batched:
            return model(x, t, cond), model(x, t, null_cond)
        return model(torch.cat([x, x]), torch.cat([t, t]), _concat_conditioning(cond, null_cond)).chunk(2)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        conditional, unconditional = outputs(x, t)
        if eps_channels is None:
            return conditional + (scale - 1) * (conditional - unconditional)
        c, u = conditional[:, :eps_channels], unconditional[:, :eps_channels]
        return torch.cat([c + (scale - 1) * (c - u), conditional[:, eps_channels:]], dim=1)

    return guided


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Dynamic thresholding of x̂_0 (Saharia et al. 2022, "Imagen", sec. 2.3).

    Per sample, s = max(1, the ``percentile`` quantile of |x̂_0|); x̂_0 is clipped to [−s, s] and divided
    by s. A prediction already inside [−1, 1] is returned unchanged.
    """
    flat = x0.abs().reshape(x0.shape[0], -1)
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


def static_threshold(x0: Tensor) -> Tensor:
    """Static thresholding (Saharia et al. 2022, sec. 2.3; Ho et al. 2020's clip of x̂_0): clamp to [−1, 1]."""
    return x0.clamp(-1.0, 1.0)


_DECAYS = {
    "linear": lambda r: r,
    "constant": lambda r: torch.ones_like(r),
    "cosine": lambda r: (1 - torch.cos(math.pi * r)) / 2,
}


@dataclass
class ImageGuidance:
    """Image guidance of the unCLIP-lite study: x_t ← x_t + w · d_t · (z − x_t).

    ``image`` z in [−1, 1], [B or 1, C, H, W]; ``scale`` w (0 is a no-op); ``decay`` d_t as a function
    of r = t/T: "linear" d = r (the study's t/T), "constant" d = 1, "cosine" d = (1 − cos πr)/2, a
    smooth ramp from 0 at t = 0 to 1 at t = T. Guidance is strong while the sample is noisy and fades
    as it is refined.
    """

    image: Tensor
    scale: float
    decay: str = "linear"

    def __post_init__(self):
        if self.decay not in _DECAYS:
            raise ValueError(f"unknown image guidance decay {self.decay!r}; valid: {sorted(_DECAYS)}")

    def __call__(self, x: Tensor, t_original: Tensor, T: int) -> Tensor:
        """Move x towards the image by w·d_t; ``t_original`` [B] are training step indices out of T."""
        ratio = t_original.to(device=x.device, dtype=x.dtype) / T
        d = _DECAYS[self.decay](ratio).reshape(-1, *([1] * (x.ndim - 1)))
        return x + self.scale * d * (self.image.to(device=x.device, dtype=x.dtype) - x)


def gradient_guidance(
    log_likelihood: Callable[[Tensor, Tensor], Tensor], scale: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier guidance (Dhariwal & Nichol 2021, Algorithms 1 and 2) from any differentiable log p(y | x_t, t).

    Returns cond_fn(x, t) = scale · ∇_x log p(y | x_t, t), with ``log_likelihood(x, t)`` giving one
    value per sample (summed before differentiating). Gradients are enabled locally on a detached copy of
    x, so it works inside a ``no_grad`` sampler. DDPM adds Σ·cond_fn to the reverse mean; DDIM shifts ε̂.
    """

    def cond_fn(x: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_likelihood(x_in, t).sum(), x_in)
        return scale * grad

    return cond_fn


GUIDANCE_SCHEDULES = {  # its keys are names.GUIDANCE_SCHEDULE_NAMES (tested)
    "constant": lambda sigma, sigma_max, sigma_min: torch.ones_like(sigma),
    "linear": lambda sigma, sigma_max, sigma_min: sigma / sigma_max,
    "inverse": lambda sigma, sigma_max, sigma_min: sigma_min / sigma,
}


@dataclass
class GuidanceNorms:
    """Mean per-sample L2 norms of the two terms of a guided score, per noise level (for tuning λ)."""

    score: dict[float, list[float]]
    guidance: dict[float, list[float]]

    def summary(self) -> list[dict[str, float]]:
        """One row per level, from the highest σ: σ, mean ‖s(x, σ)‖, mean ‖λ(σ)∇ log p(y | x, σ)‖."""
        return [
            {"sigma": sigma, "score_norm": sum(self.score[sigma]) / len(self.score[sigma]),
             "guidance_norm": sum(self.guidance[sigma]) / len(self.guidance[sigma])}
            for sigma in sorted(self.score, reverse=True)
        ]  # fmt: skip


def bayes_guided_score(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
    scale: float,
    *,
    schedule: str = "constant",
    sigma_range: tuple[float, float] = (1.0, 1.0),
    norms: GuidanceNorms | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """The score of p(x | y) by Bayes' rule: ∇ log p_σ(x | y) = ∇ log p_σ(x) + λ(σ)·∇ log p(y | x, σ)
    (the study's captioner guidance; Song et al. 2021, "Score-Based Generative Modeling through SDEs",
    sec. 5 and eq. 14), as a new score function f(x, σ).

    ``log_likelihood(x, sigma)`` is one differentiable value per sample (e.g. a noise-conditioned
    captioner's log-probability of the prompt); its gradient comes from :func:`gradient_guidance`.
    λ(σ) = ``scale`` · w(σ) with w from ``schedule``: "constant" (1), "linear" (σ/σ_max, fading with the
    noise) or "inverse" (σ_min/σ, growing as the noise falls), ``sigma_range`` = (σ_max, σ_min). At
    ``scale`` = 0 the likelihood is never evaluated, so the sampler is exactly the unguided one.
    ``norms``, when given, collects both terms' norms per level.
    """
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown guidance schedule {schedule!r}; valid: {sorted(GUIDANCE_SCHEDULES)}")
    weight = GUIDANCE_SCHEDULES[schedule]
    gradient = gradient_guidance(log_likelihood, 1.0)

    def per_sample_norm(v: Tensor) -> float:
        return v.reshape(v.shape[0], -1).norm(dim=1).mean().item()

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        score = score_fn(x, sigma)
        term = torch.zeros_like(score)
        if scale > 0:
            lam = scale * weight(sigma.to(x.dtype), *sigma_range).reshape(-1, *([1] * (x.ndim - 1)))
            term = lam * gradient(x, sigma)
        if norms is not None:
            level = round(float(sigma[0]), 6)
            norms.score.setdefault(level, []).append(per_sample_norm(score))
            norms.guidance.setdefault(level, []).append(per_sample_norm(term))
        return score + term

    return guided
