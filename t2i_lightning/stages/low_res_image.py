"""Low-resolution-image conditioning: what makes a diffusion stage a super-resolution model (the upsampler).

The condition is the low-resolution image (SR3, Saharia et al. 2021; Cascaded Diffusion Models, Ho et
al. 2021) and, optionally, the CLIP image embedding (DALL-E 2, Ramesh et al. 2022, sec. 2.1):

- training batches are paired crops (:class:`~t2i_lightning.data.superres.SuperResDataModule`); the
  low-resolution crop is corrupted by noise-conditioning augmentation at a level u drawn uniformly
  from [0, ``aug_max``] (and optionally blurred, CDM sec. 4.2), and u is given to the network (Imagen
  sec. 2.4, CDM sec. 3);
- sampling corrupts the low-resolution input at one fixed small level (``aug_level``) and runs a few
  respaced steps on the whole image, in batches of at most ``max_batch_pixels`` output pixels;
- with ``residual`` the process runs on the residual x_0 = image − bicubic(low-resolution image)
  instead of the image (SRDiff, Li et al. 2022, sec. 3.2): colours and layout come from the bicubic
  image exactly, and the network only has to learn edges and texture. The residual is small (std
  0.043 on shapes against the image's 0.62), which shifts every timestep's signal-to-noise ratio down
  by the square of that factor, so that almost all of the schedule is noise to it; ``residual_scale``
  multiplies it back to an image's scale (as latent diffusion rescales its latents to unit variance,
  Rombach et al. 2022, sec. 4.3.2 and appendix G);
- with a ``predictor`` (the demo's default) the residual's base is not the bicubic image but a
  deterministic regressor's estimate of the high-resolution image, trained jointly with MSE, and the
  diffusion model refines what the regressor misses (predict-and-refine: Whang et al. 2022,
  "Deblurring via Stochastic Refinement", sec. 3; CorrDiff, Mardani et al. 2023, sec. 2). Diffused over
  bicubic, the demo's 800 steps never learnt to add edges: the noisy sample gives them away at all but
  the last few of the 1,000 timesteps, so the network learnt to read them there and drew bicubic images
  from pure noise; the regressor learns them from the condition alone.

There is no classifier-free guidance: the low-resolution image determines the output almost entirely,
so the condition is never dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..diffusion import gaussian_blur, noise_augment
from ..nn.sr_unet import upsample_bicubic
from .conditioning import Conditioning
from .embedding_stats import EmbeddingStatsMixin

MAX_BATCH_PIXELS = 2 * 256 * 256  # output pixels per forward pass when sampling (two 256px images)


class LowResImage(EmbeddingStatsMixin, Conditioning):
    """Args:
    stats: ``stats.json`` of the embedding directory when the network takes a CLIP image embedding
        (``cond_dim`` > 0); unused otherwise.
    aug_max: training augmentation levels are uniform in [0, aug_max] (levels in [0, 1]).
    blur_prob, blur_sigma: with probability ``blur_prob`` a training low-resolution crop is also
        blurred with σ uniform in ``blur_sigma`` (pixels); 0 turns it off.
    aug_level: the fixed augmentation level used when sampling.
    residual: diffuse image − bicubic(low-res) instead of the image (SRDiff); the demo's default.
    residual_scale: with ``residual``, the process runs on residual_scale·(image − base).
    predictor: a :class:`~t2i_lightning.nn.sr_unet.SuperResUNet` with ``noisy_input`` false, or None.
        Given, it regresses residual_scale·(image − bicubic) from the clean low-resolution image, its
        estimate is the residual's base instead of the bicubic image, and its MSE is added to the loss
        (logged as ``predictor``); needs ``residual``.
    """

    guided = False
    max_batch_pixels = MAX_BATCH_PIXELS

    def __init__(
        self,
        stats: str | None = None,
        aug_max: float = 0.5,
        blur_prob: float = 0.0,
        blur_sigma: tuple[float, float] = (0.4, 0.6),
        aug_level: float = 0.1,
        residual: bool = False,
        residual_scale: float = 1.0,
        predictor: nn.Module | None = None,
    ):
        super().__init__(drop_prob=0.0, null_cond="zeros")
        if not (0.0 <= aug_max <= 1.0 and 0.0 <= aug_level <= 1.0):
            raise ValueError(f"aug_max and aug_level are levels in [0, 1], got {aug_max} and {aug_level}")
        if predictor is not None and not residual:
            raise ValueError("A predictor gives the residual's base: set residual true to use one")
        if predictor is not None and getattr(predictor, "noisy_input", True):
            raise ValueError("The predictor must be a SuperResUNet regressor (noisy_input false)")
        if residual_scale <= 0:
            raise ValueError(f"residual_scale must be positive, got {residual_scale}")
        if not 0.0 <= blur_prob <= 1.0 or not 0.0 <= blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(
                f"blur_prob must be in [0, 1] and blur_sigma a range (low, high), got {blur_prob}, {blur_sigma}"
            )
        self.stats_path, self.aug_max, self.aug_level = stats, aug_max, aug_level
        self.blur_prob, self.blur_sigma = blur_prob, tuple(blur_sigma)
        self.residual, self.residual_scale = residual, residual_scale
        self.predictor = predictor
        self.takes_embedding, self.stats_loaded, self.factor = False, True, 1

    def bind(self, net: nn.Module) -> None:
        """Embedding statistics when the U-Net takes a CLIP image embedding; the upsampling factor."""
        self.factor = net.factor
        self.takes_embedding = bool(net.cond_dim)
        if self.takes_embedding:
            self.init_embedding_stats(self.stats_path, {"img": net.cond_dim})

    def load_stats(self, stats: dict) -> None:
        self.copy_stats(stats, ("img",))

    def encode(
        self,
        inputs: torch.Tensor,
        *,
        device: torch.device,
        generator: torch.Generator | None = None,
        aug_level: torch.Tensor | float | None = None,
        image_embeddings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The network's condition: the low-resolution images ``inputs`` (B x 3 x h x w in [-1, 1])
        noise-augmented at ``aug_level`` (a float or [B]; default the sampling level), and the
        standardised raw CLIP image embeddings if the network takes them."""
        low_res = inputs.to(device).float()
        level = self.aug_level if aug_level is None else aug_level
        levels = torch.as_tensor(level, dtype=low_res.dtype, device=device).expand(len(low_res))
        noise = torch.randn(low_res.shape, generator=generator, device=device, dtype=low_res.dtype)
        cond = {"low_res": noise_augment(low_res, levels, noise), "aug_level": levels}
        if self.takes_embedding:
            if image_embeddings is None:
                raise ValueError("This upsampler is conditioned on CLIP image embeddings: pass image_embeddings")
            cond["embedding"] = (image_embeddings.to(device).float() - self.mean_img) / self.std_img
        return cond

    def from_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """A training batch's low-resolution crops, blurred (with ``blur_prob``) and noise-augmented at
        random levels in [0, aug_max]."""
        low_res = batch["low_res"]
        n = len(low_res)
        if self.blur_prob > 0:
            low, high = self.blur_sigma
            sigma = low + (high - low) * torch.rand(n, device=low_res.device)
            low_res = gaussian_blur(low_res, torch.where(torch.rand(n, device=low_res.device) < self.blur_prob, sigma, 0))
        levels = torch.rand(n, device=low_res.device) * self.aug_max
        return self.encode(low_res, device=device, aug_level=levels, image_embeddings=batch.get("img_emb"))

    def bicubic(self, low_res: torch.Tensor) -> torch.Tensor:
        """The clean low-resolution image upsampled bicubically, clamped to [-1, 1] (the residual's base
        without a predictor)."""
        return upsample_bicubic(low_res.float(), self.factor).clamp(-1, 1)

    def residual_base(self, low_res: torch.Tensor, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image the residual is taken over, and the predictor's raw output (None without one):
        bicubic(low_res), plus the predictor's estimate of the scaled residual over it divided by the scale.

        The predictor reads the clean ``low_res`` (level 0), not the noise-augmented condition of the
        diffusion network: trained on augmented inputs (levels up to 0.5) the demo's 800 steps left its
        edge sharpness at 0.51, trained on clean ones they reached 0.92."""
        low_res = low_res.to(cond["low_res"].device).float()
        bicubic = self.bicubic(low_res)
        if self.predictor is None:
            return bicubic, None
        clean = {**cond, "low_res": low_res, "aug_level": torch.zeros_like(cond["aug_level"])}
        predicted = self.predictor.regress(clean)
        return bicubic + predicted.detach().float() / self.residual_scale, predicted

    def target(self, batch: dict[str, Any], cond: dict[str, torch.Tensor], net: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The high-resolution crops, or their scaled residual over :meth:`residual_base` when
        ``residual``; with a predictor, also its per-sample MSE to the scaled residual over bicubic."""
        image = batch["image"]
        if not self.residual:
            return image, {}
        base, predicted = self.residual_base(batch["low_res"], cond)
        target = (image - base.to(image.dtype)) * self.residual_scale
        if predicted is None:
            return target, {}
        # target + the (detached) prediction is scale·(image − bicubic), what the predictor regresses
        error = predicted.float() - (target.float() + predicted.detach().float())
        return target, {"predictor": error.pow(2).mean(dim=(1, 2, 3))}

    def offset(self, inputs: torch.Tensor, cond: dict[str, torch.Tensor], net: nn.Module) -> tuple[torch.Tensor | None, float]:
        return (self.residual_base(inputs, cond)[0], self.residual_scale) if self.residual else (None, 1.0)

    def output_size(self, inputs: torch.Tensor, net: nn.Module) -> tuple[int, int]:
        """``factor`` times the low-resolution size (which the U-Net must be able to halve enough times)."""
        if inputs.ndim != 4 or inputs.shape[1] != net.in_channels:
            raise ValueError(f"low_res must be B x {net.in_channels} x h x w, got {tuple(inputs.shape)}")
        size = (inputs.shape[-2] * self.factor, inputs.shape[-1] * self.factor)
        net.check_size(*size)
        return size
