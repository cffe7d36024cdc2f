"""ViT image towers with a convolutional stem for the project's small CLIPs, registered with timm.

A plain ViT cuts the image into p x p patches with one stride-p convolution. Xiao et al. 2021
("Early Convolutions Help Transformers See Better", sec. 3) replace it by a few 3x3 stride-2
convolutions ending in a 1x1 projection, with the same output grid: the transformer is unchanged,
but optimisation is far easier and small ViTs learn local shape cues from small data. On the
shapes data a 3-layer ViT/8 at 64px learned colours in 500 CLIP steps but, after 1,500, still told
the 8 shape kinds apart only 21% of the time (zero-shot); the conv-stem tower of the same width
and depth (`shapes-vitc-tiny`) learns faster, but no better on kinds (0.25 after 1,000 steps); the
project's default is now a CNN tower (:mod:`t2i_lightning.nn.cnn_tower`), see the README.

The towers are timm ``VisionTransformer``s (timm's blocks, attention, class token and position
embedding) whose patch embedding is :class:`ConvStemPatchEmbed`; importing this module registers
them with timm, and open_clip builds them through its ``timm_model_name`` vision config.
"""

from __future__ import annotations

import functools
import math

from timm.layers import PatchEmbed
from timm.models import build_model_with_cfg, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class ConvStemPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` with its stride-p convolution replaced by log2(p) blocks of 3x3 stride-2
    convolution, GroupNorm and ReLU (channels ``stem_channels``, doubling each block), then a 1x1
    convolution to ``embed_dim``: the same p x p grid of tokens."""

    def __init__(self, *args, in_chans: int = 3, embed_dim: int = 768, stem_channels: int = 32, **kwargs):
        super().__init__(*args, in_chans=in_chans, embed_dim=embed_dim, **kwargs)
        stride = self.patch_size[0]
        blocks = round(math.log2(stride))
        if 2**blocks != stride or self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"A convolutional stem needs a square power-of-two patch size, got {self.patch_size}")
        layers: list[nn.Module] = []
        channels, previous = stem_channels, in_chans
        for _ in range(blocks):
            layers += [nn.Conv2d(previous, channels, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(min(8, channels), channels), nn.ReLU(inplace=True)]  # fmt: skip
            previous, channels = channels, channels * 2
        layers.append(nn.Conv2d(previous, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


def _conv_stem_vit(
    variant: str, image_size: int, width: int, depth: int, heads: int, stem_channels: int, pretrained: bool, **kwargs
) -> VisionTransformer:
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights: it is trained by the project")
    return build_model_with_cfg(
        VisionTransformer, variant, pretrained=False, img_size=image_size, patch_size=8, embed_dim=width,
        depth=depth, num_heads=heads, num_classes=0,
        embed_layer=functools.partial(ConvStemPatchEmbed, stem_channels=stem_channels), **kwargs,
    )  # fmt: skip


@register_model
def shapes_vitc_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """64px, 8x8 tokens, 3 blocks of width 128 with 4 heads, stem 32-64-128 (the demo's CLIP)."""
    return _conv_stem_vit("shapes_vitc_tiny", 64, 128, 3, 4, 32, pretrained, **kwargs)


@register_model
def shapes_vitc_micro(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """32px, 4x4 tokens, 1 block of width 32 with 2 heads, stem 8-16-32 (tests)."""
    return _conv_stem_vit("shapes_vitc_micro", 32, 32, 1, 2, 8, pretrained, **kwargs)

