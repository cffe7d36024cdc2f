"""A small residual CNN feature map for 64px images of small objects.

A 3x3 convolution at full resolution, then a stride-2 one, then one residual block per level
(diffusers' ``ResnetBlock2D``: GroupNorm, SiLU, 3x3 convolutions, He et al. 2016) with a strided
convolution between levels, and a final GroupNorm and SiLU. The full-resolution convolution sees a
~10-pixel shape before anything halves it. Used by the judge (:mod:`t2i_lightning.nn.judge`) and by
the project's CLIP image tower (:mod:`t2i_lightning.nn.cnn_tower`): the same layout, separate
weights and training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn


class ResidualFeatureMap(nn.Module):
    """``feature_map(images) -> (B, channels[-1], S / 2**len(channels), ...)``.

    Args:
        image_size: side it reads; images of another size are resized to it, antialiased.
        channels: channels of the levels after the stem (which halves the resolution); each later
            level halves it again.
        groups: GroupNorm groups.
    """

    def __init__(self, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128), groups: int = 16):
        super().__init__()
        self.image_size = image_size
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, padding=1), nn.SiLU(), nn.Conv2d(channels[0], channels[0], 3, stride=2, padding=1)
        )
        layers: list[nn.Module] = []
        previous = channels[0]
        for i, c in enumerate(channels):
            layers.append(ResnetBlock2D(in_channels=previous, out_channels=c, temb_channels=None, groups=groups))
            if i < len(channels) - 1:
                layers.append(Downsample2D(c, use_conv=True))
            previous = c
        self.body = nn.ModuleList(layers)
        self.norm = nn.GroupNorm(groups, previous)
        self.map_channels = previous
        self.map_side = image_size // 2 ** len(channels)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        h = self.stem(images)
        for layer in self.body:
            h = layer(h, None) if isinstance(layer, ResnetBlock2D) else layer(h)
        return F.silu(self.norm(h))
