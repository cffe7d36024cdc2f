"""Super-resolution quality against a ground truth: PSNR, SSIM and edge sharpness.

PSNR and SSIM (Wang et al. 2004) come from torchmetrics, on images mapped to [0, 1]. Edge sharpness
is the mean image-gradient magnitude of a candidate on the ground truth's edges relative to the
ground truth's (:func:`edge_sharpness`): bicubic
upsampling is blurry and scores well below 1; an upsampler that restores edges scores near 1, and
noise on the edges raises it too, which is why it is read beside PSNR/SSIM and never alone.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

EDGE_THRESHOLD = 0.05  # a ground-truth pixel is on an edge where its gradient magnitude exceeds this ([0, 1] images)


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image, the peak signal-to-noise ratio in dB of ``images`` against ``reference`` (B x C x H x W in
    [-1, 1], ``images`` clamped to it), compared in [0, 1]: 10 log10(1 / MSE)."""
    error = ((images.float().clamp(-1, 1) - reference.float()) / 2).pow(2).flatten(1).mean(dim=1)
    return -10 * torch.log10(error.clamp_min(1e-10))


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Per pixel, √(∂x² + ∂y²) (forward differences) averaged over channels: B x (H-1) x (W-1)."""
    images = images.float()
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    return (dx**2 + dy**2).sqrt().mean(dim=1)


def edge_sharpness(truth: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Per image, the mean gradient magnitude of ``candidate`` over the ground truth's edge pixels
    (gradient above ``EDGE_THRESHOLD``) relative to the ground truth's there: 1 is as sharp, a blur
    spreads each edge over more pixels and lowers it; [B], NaN for an image without edges.

    The mean over *all* pixels would not do: it is the total variation, which a blur keeps (a step
    of height h spread over w pixels still sums to h) and noise in flat regions inflates.
    """
    reference, measured = gradient_magnitude(truth), gradient_magnitude(candidate)
    edges = (reference > EDGE_THRESHOLD).float()
    return (measured * edges).sum(dim=(1, 2)) / (reference * edges).sum(dim=(1, 2))


def superres_scores(truth: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and sharpness ratio of ``candidate`` against ``truth`` (both B x 3 x H x W in [-1, 1])."""
    if truth.shape != candidate.shape:
        raise ValueError(
            f"Shapes differ: ground truth {tuple(truth.shape)}, candidate {tuple(candidate.shape)}"
        )
    a = (truth.float().clamp(-1, 1) + 1) / 2
    b = (candidate.float().clamp(-1, 1) + 1) / 2
    psnr = peak_signal_noise_ratio(b, a, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(b, a, data_range=1.0, reduction="none")
    sharpness = edge_sharpness(a, b)
    return {"psnr": psnr.mean().item(), "ssim": ssim.mean().item(), "sharpness": sharpness.nanmean().item()}
