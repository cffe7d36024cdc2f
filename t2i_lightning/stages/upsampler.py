"""Upsampler stage: a super-resolution diffusion model, 64 -> 256, conditioned on the low-resolution image.

The diffusion training and sampling of :class:`~t2i_lightning.stages.decoder.DecoderStage` (hybrid
loss with learned variance on the cosine schedule, EMA, respaced DDPM or DDIM) with the condition
being the low-resolution image (SR3, Saharia et al. 2021; Cascaded Diffusion Models, Ho et al.
2021) and, optionally, the CLIP image embedding (DALL-E 2, Ramesh et al. 2022, sec. 2.1):

- training batches are paired crops (:class:`~t2i_lightning.data.superres.SuperResDataModule`);
  the low-resolution crop is corrupted by noise-conditioning augmentation at a level u drawn
  uniformly from [0, ``aug_max``] (and optionally blurred, CDM sec. 4.2), and u is given to the
  network (Imagen sec. 2.4, CDM sec. 3);
- sampling corrupts the low-resolution input at one fixed small level (``aug_level``) and runs a
  few respaced steps on the whole image;
- with ``residual`` the process runs on the residual x_0 = image − bicubic(low-resolution image)
  instead of the image (SRDiff, Li et al. 2022, sec. 3.2): colours and layout come from the
  bicubic image exactly, and the network only has to learn edges and texture. The residual is
  small (std 0.043 on shapes against the image's 0.62), which shifts every timestep's
  signal-to-noise ratio down by the square of that factor, so that almost all of the schedule is
  noise to it; ``residual_scale`` multiplies it back to an image's scale (as latent diffusion
  rescales its latents to unit variance, Rombach et al. 2022, sec. 4.3.2 and appendix G);
- with a ``predictor`` (the demo's default) the residual's base is not the bicubic image but a
  deterministic regressor's estimate of the high-resolution image, trained jointly with MSE, and
  the diffusion model refines what the regressor misses (predict-and-refine: Whang et al. 2022,
  "Deblurring via Stochastic Refinement", sec. 3; CorrDiff, Mardani et al. 2023, sec. 2). Diffused
  over bicubic, the demo's 800 steps never learnt to add edges: the noisy sample gives them away
  at all but the last few of the 1,000 timesteps, so the network learnt to read them there and
  drew bicubic images from pure noise; the regressor learns them from the condition alone.

There is no classifier-free guidance: the low-resolution image determines the output almost
entirely, so the condition is never dropped.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..diffusion import gaussian_blur, network_in_precision, noise_augment
from ..nn.sr_unet import upsample_bicubic
from ..training.stage_training import GENERATIVE
from .decoder import DecoderStage

MAX_BATCH_PIXELS = 2 * 256 * 256  # output pixels per forward pass when sampling (two 256px images)


class UpsamplerStage(DecoderStage):
    """Args:
    net: :class:`~t2i_lightning.nn.sr_unet.SuperResUNet`.
    stats: ``stats.json`` of the embedding directory when ``net.cond_dim`` > 0 (conditioning on
        CLIP image embeddings); unused otherwise.
    aug_max: training augmentation levels are uniform in [0, aug_max] (levels in [0, 1]).
    blur_prob, blur_sigma: with probability ``blur_prob`` a training low-resolution crop is also
        blurred with σ uniform in ``blur_sigma`` (pixels); 0 turns it off.
    aug_level: the fixed augmentation level used when sampling.
    residual: diffuse image − bicubic(low-res) instead of the image (SRDiff); the demo's default.
    residual_scale: with ``residual``, the process runs on residual_scale·(image − base).
    predictor: a :class:`~t2i_lightning.nn.sr_unet.SuperResUNet` with ``noisy_input`` false, or None.
        Given, it regresses residual_scale·(image − bicubic) from the clean low-resolution image, its
        estimate is the residual's base instead of the bicubic image, and its MSE is added to the
        loss (logged as ``predictor``); needs ``residual``.
    sampler, steps, threshold: default sampling settings (see :meth:`sample`).
    The other arguments are :class:`DecoderStage`'s.
    """

    def __init__(
        self,
        net: nn.Module,
        stats: str | None = None,
        schedule: str = "cosine",
        timesteps: int = 1000,
        parameterization: str = "eps",
        vlb_weight: float = 1e-3,
        aug_max: float = 0.5,
        blur_prob: float = 0.0,
        blur_sigma: tuple[float, float] = (0.4, 0.6),
        aug_level: float = 0.1,
        residual: bool = False,
        residual_scale: float = 1.0,
        predictor: nn.Module | None = None,
        sampler: str = "ddpm",
        steps: int | str = 10,
        threshold: float | None = None,
        lr: float = GENERATIVE.lr,
        weight_decay: float = GENERATIVE.weight_decay,
        warmup_steps: int = GENERATIVE.warmup_steps,
        lr_decay: str = GENERATIVE.lr_decay,
        ema_decay: float = GENERATIVE.ema_decay,
        ema_start_step: int = GENERATIVE.ema_start_step,
        samples: pl.Callback | None = None,
    ):
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
        super().__init__(
            net, stats=stats, schedule=schedule, timesteps=timesteps, parameterization=parameterization,
            vlb_weight=vlb_weight, cond_drop_prob=0.0, null_cond="zeros", lr=lr, weight_decay=weight_decay,
            warmup_steps=warmup_steps, lr_decay=lr_decay, ema_decay=ema_decay, ema_start_step=ema_start_step,
            samples=samples,
        )  # fmt: skip
        self.predictor = predictor

    # --- conditioning -------------------------------------------------------------------------

    @property
    def conditions_on_embedding(self) -> bool:
        return bool(self.net.cond_dim)

    def init_conditioning(self, stats: str | None, null_cond: str) -> None:
        """Embedding statistics when the U-Net takes a CLIP image embedding; nothing otherwise."""
        if self.conditions_on_embedding:
            self.init_embedding_stats(stats, {"img": self.net.cond_dim})
        else:
            self.clip_identity, self.stats_loaded = {}, True

    def condition(
        self,
        low_res: torch.Tensor,
        aug_level: torch.Tensor | float,
        image_embeddings: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The network's condition: ``low_res`` (B x 3 x h x w in [-1, 1]) noise-augmented at
        ``aug_level`` (a float or [B]), and the standardised raw CLIP image embeddings if it takes them."""
        low_res = low_res.to(self.device).float()
        levels = torch.as_tensor(aug_level, dtype=low_res.dtype, device=self.device).expand(len(low_res))
        noise = torch.randn(low_res.shape, generator=generator, device=self.device, dtype=low_res.dtype)
        cond = {"low_res": noise_augment(low_res, levels, noise), "aug_level": levels}
        if self.conditions_on_embedding:
            if image_embeddings is None:
                raise ValueError(
                    "This upsampler is conditioned on CLIP image embeddings: pass image_embeddings"
                )
            cond["embedding"] = (image_embeddings.to(self.device).float() - self.mean_img) / self.std_img
        return cond

    def batch_condition(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A training batch's low-resolution crops, blurred (with ``blur_prob``) and noise-augmented at
        random levels in [0, aug_max]."""
        hp = self.hparams
        low_res = batch["low_res"]
        n = len(low_res)
        if hp.blur_prob > 0:
            low, high = hp.blur_sigma
            sigma = low + (high - low) * torch.rand(n, device=low_res.device)
            low_res = gaussian_blur(
                low_res, torch.where(torch.rand(n, device=low_res.device) < hp.blur_prob, sigma, 0)
            )
        levels = torch.rand(n, device=low_res.device) * hp.aug_max
        return self.condition(low_res, levels, batch.get("img_emb"))

    @property
    def residual_scale(self) -> float:
        """The residual's scale factor (1 for checkpoints written before it existed)."""
        return self.hparams.get("residual_scale", 1.0)

    def bicubic(self, low_res: torch.Tensor) -> torch.Tensor:
        """The clean low-resolution image upsampled bicubically, clamped to [-1, 1] (the residual's base
        without a predictor)."""
        return upsample_bicubic(low_res.to(self.device).float(), self.net.factor).clamp(-1, 1)

    def residual_base(self, low_res: torch.Tensor, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image the residual is taken over, and the predictor's raw output (None without one):
        bicubic(low_res), plus the predictor's estimate of the scaled residual over it divided by the scale.

        The predictor reads the clean ``low_res`` (level 0), not the noise-augmented condition of the
        diffusion network: trained on augmented inputs (levels up to 0.5) the demo's 800 steps left
        its edge sharpness at 0.51, trained on clean ones they reached 0.92."""
        bicubic = self.bicubic(low_res)
        if self.predictor is None:
            return bicubic, None
        clean = {**cond, "low_res": low_res.to(self.device).float(), "aug_level": torch.zeros_like(cond["aug_level"])}
        predicted = self.predictor.regress(clean)
        return bicubic + predicted.detach().float() / self.residual_scale, predicted

    def diffusion_target(
        self, batch: dict[str, Any], cond: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The high-resolution crops, or their scaled residual over :meth:`residual_base` when
        ``residual``; with a predictor, also its per-sample MSE to the scaled residual over bicubic."""
        image = batch["image"]
        if not self.hparams.residual:
            return image, {}
        base, predicted = self.residual_base(batch["low_res"], cond)
        target = (image - base.to(image.dtype)) * self.residual_scale
        if predicted is None:
            return target, {}
        # target + the (detached) prediction is scale·(image − bicubic), what the predictor regresses
        error = predicted.float() - (target.float() + predicted.detach().float())
        return target, {"predictor": error.pow(2).mean(dim=(1, 2, 3))}

    def drop_condition(self, cond: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """The condition is never dropped (no classifier-free guidance)."""
        return cond

    # --- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        low_res: torch.Tensor,
        *,
        image_embeddings: torch.Tensor | None = None,
        aug_level: float | None = None,
        sampler: str | None = None,
        steps: int | str | None = None,
        threshold: float | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        progress: bool = True,
        max_batch_pixels: int | None = MAX_BATCH_PIXELS,
        precision: str = "32-true",
    ) -> torch.Tensor:
        """High-resolution images in [-1, 1] (B x 3 x factor·h x factor·w) for ``low_res`` (B x 3 x h x w
        in [-1, 1], any size whose upsampled side the U-Net can halve enough times).

        ``aug_level``, ``sampler``, ``steps`` default to the stage's; ``threshold`` is a dynamic
        thresholding percentile, or None for static clipping (the default). The images are drawn in
        batches of at most ``max_batch_pixels`` output pixels (at least one image; None: all at
        once), one after the other from ``generator``: memory stays flat in the number of images
        (50 images at 256px in one batch peaked at 7.2 GiB). ``precision``: "bf16-mixed" runs the diffusion
        U-Net under bfloat16 autocast, the sampler in float32
        (:func:`t2i_lightning.diffusion.network_in_precision`); a predictor's single pass stays float32.
        """
        if low_res.ndim != 4 or low_res.shape[1] != self.net.in_channels:
            raise ValueError(
                f"low_res must be B x {self.net.in_channels} x h x w, got {tuple(low_res.shape)}"
            )
        size = (low_res.shape[-2] * self.net.factor, low_res.shape[-1] * self.net.factor)
        self.net.check_size(*size)
        hp = self.hparams
        level = hp.aug_level if aug_level is None else aug_level
        net = network_in_precision(self.net, precision)

        def draw_batch(rows: slice) -> torch.Tensor:
            low = low_res[rows]
            cond = self.condition(low, level, None if image_embeddings is None else image_embeddings[rows], generator)
            offset = self.residual_base(low, cond)[0] if hp.residual else None
            return self.draw(
                lambda x, t: net(x, t, cond), (len(low), self.net.in_channels, *size),
                sampler=sampler or hp.sampler, steps=steps or hp.steps, threshold=threshold, eta=eta,
                offset=offset, scale=self.residual_scale,
                generator=generator, progress=progress,
            )  # fmt: skip

        per_batch = len(low_res) if max_batch_pixels is None else max(1, max_batch_pixels // (size[0] * size[1]))
        return torch.cat([draw_batch(slice(i, i + per_batch)) for i in range(0, len(low_res), per_batch)])
