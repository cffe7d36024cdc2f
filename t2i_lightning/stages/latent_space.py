"""Where a :class:`~t2i_lightning.stages.diffusion.DiffusionStage` diffuses: the autoencoder's latent space.

Injected as the stage's ``space`` (None: pixels). Latent diffusion (Rombach et al. 2022, §3.2 and §4.3.2):
x_0 is the autoencoder's latent of the image multiplied by ``scale_factor`` (1/σ of the training latents,
from the latent directory's ``stats.json``), so the diffusion runs on unit-variance data; a sample is
divided by it and decoded by the autoencoder. Latents are unbounded, so sampling neither thresholds nor
clips x̂_0 (:func:`t2i_lightning.diffusion.draw_samples`' ``bounded``); the decoded images are clamped to [-1, 1].

The scale factor and the autoencoder's tensor digest are kept in the stage's checkpoint; the autoencoder
itself is not (it is loaded from its checkpoint the first time a sample is decoded, frozen, and refused
when it is not the one that made the training latents).
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import torch
from torch import nn

from ..data.latents import read_latent_stats
from ..diffusion import ImageGuidance
from ..registry import make_command
from ..training.stage_loading import load_frozen_stage
from .encode_latents import DEFAULT_AUTOENCODER, autoencoder_identity


class FrozenAutoencoder:
    """Holds the autoencoder outside the module tree (not a submodule: not saved, not trained, not in the optimizer)."""

    def __init__(self, module: nn.Module):
        self.module = module


class LatentSpace(nn.Module):
    """Args:
    stats: ``stats.json`` of the latent directory (``make encode-latents``): scale factor, latent shape, autoencoder.
    autoencoder: the autoencoder checkpoint that decodes samples (default: ``make train-autoencoder``'s); it
        must be the one that made the latents.
    """

    bounded = False

    def __init__(self, stats: str | None = None, autoencoder: str = DEFAULT_AUTOENCODER):
        super().__init__()
        self.stats_path, self.autoencoder_path = stats, autoencoder
        self.register_buffer("scale_factor", torch.tensor(1.0))
        self.shape: list[int] = []
        self.factor = 1
        self.autoencoder_digest: str | None = None
        self.frozen: FrozenAutoencoder | None = None
        if stats is not None and os.path.isfile(stats):
            recorded = read_latent_stats(os.path.dirname(stats) or ".")
            self.scale_factor.fill_(recorded["scale_factor"])
            self.shape, self.autoencoder_digest = list(recorded["shape"]), recorded.get("autoencoder_digest")
            self.factor = recorded["factor"]
        elif stats is not None:
            warnings.warn(f"LatentSpace: stats file not found: {stats} (fine when loading a checkpoint)", stacklevel=2)

    def bind(self, net: nn.Module) -> None:
        """Refuse a network whose input is not the latents' shape."""
        if self.shape and [net.in_channels, net.image_size, net.image_size] != self.shape:
            raise ValueError(
                f"The latents are {'x'.join(map(str, self.shape))} (channels x side) but the U-Net takes "
                f"{net.in_channels} channels at {net.image_size}px: pass --model.init_args.net.init_args.in_channels "
                f"{self.shape[0]} --model.init_args.net.init_args.image_size {self.shape[1]}"
            )

    def on_fit_start(self) -> None:
        if not self.shape:
            raise FileNotFoundError(
                f"LatentSpace needs the latents' stats.json (stats = {self.stats_path}): {make_command('encode')} writes it"
            )

    def latent_side(self, image_size: int) -> int:
        """The latents' side for decoded images of ``image_size`` pixels."""
        if image_size % self.factor:
            raise ValueError(f"image size {image_size} is not a multiple of the autoencoder's factor {self.factor}")
        return image_size // self.factor

    def x0(self, batch: dict) -> torch.Tensor:
        """The diffused data of a training batch: its latents times the scale factor."""
        return batch["latent"].float() * self.scale_factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the scaled latents the diffusion runs on (the autoencoder's posterior means, as
        extraction writes them, times the scale factor)."""
        autoencoder = self.autoencoder(images.device)
        return autoencoder.encode_latents(images.float()) * self.scale_factor

    def guidance_in_latents(self, guidance: ImageGuidance | None, device: torch.device) -> ImageGuidance | None:
        """Image guidance (x_t pulled towards an image z) for a latent sample: z replaced by its scaled latents."""
        return None if guidance is None else dataclasses.replace(guidance, image=self.encode(guidance.image.to(device)))

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Sampled (scaled) latents -> images in [-1, 1], through the autoencoder's decoder."""
        autoencoder = self.autoencoder(x0.device)
        return autoencoder.decode_latents(x0 / self.scale_factor)

    def autoencoder(self, device: torch.device) -> nn.Module:
        if self.frozen is None:
            identity = autoencoder_identity(self.autoencoder_path) if os.path.isfile(self.autoencoder_path) else {}
            if not identity:
                raise FileNotFoundError(
                    f"Autoencoder checkpoint not found: {self.autoencoder_path} (the latent decoder decodes its samples "
                    f"with it; produce it with {make_command('autoencoder')})"
                )
            if self.autoencoder_digest and identity["autoencoder_digest"] != self.autoencoder_digest:
                raise ValueError(
                    f"{self.autoencoder_path} is not the autoencoder that made this decoder's training latents "
                    f"(tensor digest {identity['autoencoder_digest'][:12]}, the latents' {self.autoencoder_digest[:12]}): "
                    "pass the autoencoder the latents were encoded with"
                )
            self.frozen = FrozenAutoencoder(load_frozen_stage(self.autoencoder_path, "autoencoder"))
        return self.frozen.module.to(device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["latent_space"] = {"shape": self.shape, "factor": self.factor, "autoencoder_digest": self.autoencoder_digest}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        recorded = checkpoint.get("latent_space") or {}
        self.shape, self.autoencoder_digest = recorded.get("shape", self.shape), recorded.get("autoencoder_digest")
        self.factor = recorded.get("factor", self.factor)
