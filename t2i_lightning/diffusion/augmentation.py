"""Conditioning augmentation for cascaded (super-resolution) diffusion models.

A super-resolution model is trained on low-resolution images made from real ones but sampled on the
output of another model, which is never quite like them. Corrupting the low-resolution input
during training, and telling the network how much, makes it robust to that gap (Ho et al. 2021,
"Cascaded Diffusion Models", sec. 3 and 4.2; Saharia et al. 2022, "Imagen", sec. 2.4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .schedules import cosine_alpha_bar


def _per_sample(values: Tensor | float, like: Tensor) -> Tensor:
    """``values`` (a float or [B]) as a [B, 1, …] tensor on ``like``'s device and dtype."""
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return values.expand(like.shape[0]).reshape(-1, *([1] * (like.ndim - 1)))


def noise_augment(x: Tensor, level: Tensor | float, noise: Tensor) -> Tensor:
    """Noise-conditioning augmentation (Imagen sec. 2.4; CDM sec. 4.2, "Gaussian conditioning augmentation").

    The forward diffusion process at continuous time ``level`` u ∈ [0, 1] of the cosine schedule:
    √ᾱ(u)·x + √(1 − ᾱ(u))·ε with ᾱ from :func:`~t2i_lightning.diffusion.schedules.cosine_alpha_bar`,
    so u = 0 returns x unchanged and u = 1 is (almost) pure noise. ``level`` is a float or one
    value per sample [B]; ``noise`` is ε ~ N(0, I) shaped like x.
    """
    u = _per_sample(level, x)
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError("augmentation levels must lie in [0, 1]")
    alpha_bar = cosine_alpha_bar(u.double()).to(x.dtype)
    return torch.where(u == 0, x, alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * noise)


def gaussian_blur(x: Tensor, sigma: Tensor | float) -> Tensor:
    """Blur each image of ``x`` [B, C, H, W] with an isotropic Gaussian of std ``sigma`` pixels (a float or [B]).

    The blur augmentation of CDM sec. 4.2 (their 64→256 model: σ ∈ [0.4, 0.6], kernel 3). Separable,
    with a kernel of radius ⌈3σ⌉ normalised to sum 1 and reflected borders; σ = 0 leaves an image unchanged.
    """
    sigmas = _per_sample(sigma, x).reshape(-1)
    if bool((sigmas < 0).any()):
        raise ValueError("blur sigmas must be >= 0")
    radius = max(1, math.ceil(3 * float(sigmas.max()))) if bool((sigmas > 0).any()) else 0
    if radius == 0:
        return x
    radius = min(radius, min(x.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernels = torch.exp(-0.5 * (offsets[None] / sigmas.clamp(min=1e-6)[:, None]) ** 2)
    kernels = torch.where((sigmas == 0)[:, None], (offsets == 0).to(x.dtype)[None], kernels)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # [B, K]
    b, c, h, w = x.shape
    weight = kernels.repeat_interleave(c, dim=0)[:, None]  # [B*C, 1, K]
    flat = x.reshape(1, b * c, h, w)
    flat = torch.nn.functional.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, weight[..., None, :], groups=b * c)
    flat = torch.nn.functional.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, weight[..., :, None], groups=b * c)
    return flat.reshape(b, c, h, w)
