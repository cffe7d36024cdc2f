"""The latent route's autoencoder: diffusers' ``AutoencoderKL`` architecture, sized here and trained
from scratch (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", §3.1).

The encoder maps an image to a diagonal Gaussian over a latent ``latent_channels x (H/f) x (W/f)``,
f = 2^(number of levels - 1); the decoder maps a latent back to pixels. A latent diffusion model then
diffuses the latents (scaled to unit variance) instead of the pixels.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn


class KLAutoencoder(nn.Module):
    """Args:
    image_size: the side of the images it is trained on (recorded; any multiple of ``factor`` works).
    channels: the width of each level (one level per entry; each but the last halves the side).
    layers_per_block: residual blocks per level.
    latent_channels: channels of the latent.
    norm_groups: groups of the GroupNorms (must divide every width).
    attention: a self-attention block in the middle of the encoder and decoder (diffusers' default).
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: tuple[int, ...] = (64, 128, 128),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_groups: int = 32,
        attention: bool = True,
    ):
        super().__init__()
        channels = tuple(channels)
        if not channels or any(c % norm_groups for c in channels):
            raise ValueError(f"every width of {channels} must be a multiple of norm_groups {norm_groups}")
        self.image_size, self.latent_channels = image_size, latent_channels
        self.factor = 2 ** (len(channels) - 1)
        if image_size % self.factor:
            raise ValueError(f"image_size {image_size} is not a multiple of the downsampling factor {self.factor}")
        self.vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=channels, layers_per_block=layers_per_block,
            down_block_types=("DownEncoderBlock2D",) * len(channels), up_block_types=("UpDecoderBlock2D",) * len(channels),
            latent_channels=latent_channels, norm_num_groups=norm_groups, sample_size=image_size,
            mid_block_add_attention=attention,
        )  # fmt: skip

    @property
    def latent_size(self) -> int:
        return self.image_size // self.factor

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] (B x 3 x H x W) -> the posterior's mean and log-variance (B x C x H/f x W/f each)."""
        moments = self.vae.quant_conv(self.vae.encoder(images)) if self.vae.quant_conv is not None else self.vae.encoder(images)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (unscaled) -> images, about [-1, 1] (not clamped)."""
        if self.vae.post_quant_conv is not None:
            latents = self.vae.post_quant_conv(latents)
        return self.vae.decoder(latents)
