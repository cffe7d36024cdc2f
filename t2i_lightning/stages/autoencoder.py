"""The autoencoder stage of the latent route (``make train-autoencoder``, ``stages/autoencoder.yaml``).

A KL-regularised autoencoder (Rombach et al. 2022, §3.1 and App. G): the encoder's diagonal Gaussian
posterior q(z|x) is sampled with the reparameterisation trick, the decoder reconstructs x from z, and the
loss is the reconstruction error summed over the pixels plus ``kl_weight`` times KL(q(z|x) || N(0, I))
summed over the latent (the closed form of :func:`t2i_lightning.diffusion.normal_kl`), plus ``edge_weight``
times the error of the image's gradients (:func:`gradient_difference`), all per image and divided by the
number of pixel values (the scale does not change with the image size). The KL term only
keeps the latent space tame (small weight, as Stable Diffusion's 1e-6); the latents are scaled to unit
variance at extraction (``stats.json``'s ``scale_factor``).

Validation logs the reconstruction PSNR of the posterior mean (``val/psnr``, dB); the ``samples`` grid
shows originals beside reconstructions. EMA weights (:class:`~t2i_lightning.training.ema.FusedEMA`) are
what the checkpoint's ``state_dict``, every validation and the latents use.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from ..diffusion import normal_kl
from ..metrics.superres import psnr_per_image
from ..nn.autoencoder import KLAutoencoder
from ..training.stage_training import GENERATIVE, StageTraining, fixed_seed

RECONSTRUCTION_LOSSES = {"l1": 1, "l2": 2}  # the power p of the per-value error |x̂ − x|^p


def gradient_difference(error: torch.Tensor, power: int) -> torch.Tensor:
    """Per image, Σ |∂x̂ − ∂x|^p over horizontal and vertical neighbours, from the signed error x̂ − x
    (B x C x H x W): the image-gradient term beside the per-pixel loss, after the gradient difference loss
    of Mathieu, Couprie & LeCun (2016, eq. 5), which compares the gradients' magnitudes instead. A flat
    background has no gradient, so the term weighs the outlines, where a small object's shape is, and is
    blind to an error that is the same over a region."""
    across = (error[..., :, 1:] - error[..., :, :-1]).abs().pow(power).flatten(1).sum(dim=1)
    down = (error[..., 1:, :] - error[..., :-1, :]).abs().pow(power).flatten(1).sum(dim=1)
    return across + down


class AutoencoderStage(StageTraining, pl.LightningModule):
    """Args:
    net: the autoencoder (:class:`~t2i_lightning.nn.autoencoder.KLAutoencoder`).
    reconstruction: "l1" (default) or "l2", summed over the pixels.
    kl_weight: weight of the KL term summed over the latent, against the reconstruction summed over the pixels.
    edge_weight: weight of :func:`gradient_difference` (with the reconstruction's power) against the
        reconstruction; 0 (default) leaves it out.
    lr, weight_decay, warmup_steps, lr_decay, ema_decay, ema_start_step: as in every generative stage.
    samples: a reconstruction-grid callback (:class:`~t2i_lightning.callbacks.autoencoder_grid.ReconstructionGrid`).
    """

    def __init__(
        self,
        net: KLAutoencoder,
        reconstruction: str = "l1",
        kl_weight: float = 1e-6,
        edge_weight: float = 0.0,
        lr: float = GENERATIVE.lr,
        weight_decay: float = GENERATIVE.weight_decay,
        warmup_steps: int = GENERATIVE.warmup_steps,
        lr_decay: str = GENERATIVE.lr_decay,
        ema_decay: float = GENERATIVE.ema_decay,
        ema_start_step: int = GENERATIVE.ema_start_step,
        samples: pl.Callback | None = None,
    ):
        super().__init__()
        if reconstruction not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"reconstruction must be one of {tuple(RECONSTRUCTION_LOSSES)}, got {reconstruction!r}")
        for name, weight in (("kl_weight", kl_weight), ("edge_weight", edge_weight)):
            if weight < 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        with warnings.catch_warnings():  # the net's config is kept on purpose: load_from_checkpoint rebuilds it
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(ignore=["samples"])
        self.net = net
        self.samples = samples

    @property
    def latent_channels(self) -> int:
        return self.net.latent_channels

    @property
    def factor(self) -> int:
        return self.net.factor

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior means of images in [-1, 1]: the latents that extraction writes (unscaled)."""
        return self.net.encode(images)[0]

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from unscaled latents."""
        return self.net.decode(latents).clamp(-1, 1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.encode_latents(images))

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image: ``loss``, ``reconstruction`` (mean per pixel value), ``kl`` (summed over the latent) and,
        with an ``edge_weight``, ``edges`` (the gradient difference per pixel value)."""
        mean, logvar = self.net.encode(images)
        latents = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        error = self.net.decode(latents).float() - images.float()
        power = RECONSTRUCTION_LOSSES[self.hparams.reconstruction]
        values = error[0].numel()
        reconstruction = error.abs().pow(power).flatten(1).sum(dim=1)
        kl = normal_kl(mean.float(), logvar.float(), torch.zeros(()), torch.zeros(())).flatten(1).sum(dim=1)
        loss = (reconstruction + self.hparams.kl_weight * kl) / values
        out = {"reconstruction": reconstruction / values, "kl": kl}
        if self.hparams.edge_weight:
            out["edges"] = gradient_difference(error, power) / values
            loss = loss + self.hparams.edge_weight * out["edges"]
        return {"loss": loss, **out}

    def _log(self, losses: dict[str, torch.Tensor], name: str, n: int) -> torch.Tensor:
        means = {key: value.mean() for key, value in losses.items()}
        sync = name != "train"
        self.log(f"{name}/loss", means["loss"], prog_bar=True, batch_size=n, sync_dist=sync)
        self.log_dict({f"{name}/{k}": v for k, v in means.items() if k != "loss"}, batch_size=n, sync_dist=sync)
        return means["loss"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._log(self.losses(batch["image"]), "train", len(batch["key"]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images = batch["image"]
        with fixed_seed(batch_idx):
            losses = self.losses(images)
        losses["psnr"] = psnr_per_image(self.reconstruct(images), images)
        self._log(losses, "val", len(batch["key"]))

