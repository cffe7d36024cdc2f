"""A convolutional CLIP image tower for small shapes at 64px, registered with timm.

On the shapes data the kind of a ~10-pixel object is what a contrastive image tower learns last:
the 3-block ViT/8 (with or without a convolutional stem) still told the 8 kinds apart only ~25% of
the time zero-shot after the demo's 1,000 steps. A residual CNN that convolves at full resolution
before halving (:class:`~t2i_lightning.nn.residual_cnn.ResidualFeatureMap`), trained with the
caption-word loss (:mod:`t2i_lightning.nn.caption_words`), learnt them where the ViT with the same
loss did not (neither change alone did; README). Its 8x8 feature map is pooled by attention with a
learned position embedding (timm's ``AttentionPool2d``, the attention pooling of CLIP's ResNets,
Radford et al. 2021, sec. 2.4), so positions and relations survive the pooling. Importing this module registers the towers
with timm; open_clip builds them through its ``timm_model_name`` vision config
(``clip_configs/shapes-cnn-*.json``) and adds the linear projection to the embedding.
"""

from __future__ import annotations

import torch
from timm.layers import AttentionPool2d
from timm.models import build_model_with_cfg, register_model

from .residual_cnn import ResidualFeatureMap


class CNNImageTower(ResidualFeatureMap):
    """``tower(images) -> (B, num_features)``: the residual feature map, attention-pooled.

    Args:
        image_size, channels, groups: those of :class:`ResidualFeatureMap`.
        num_features: width of the pooled output (open_clip projects it to the embedding).
        head_width: channels per attention head of the pool.
        in_chans: must be 3 (timm passes it).
        num_classes: ignored: timm passes its default, and open_clip then resets the (absent)
            classifier to none.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: tuple[int, ...] = (32, 64, 128),
        groups: int = 16,
        num_features: int = 256,
        head_width: int = 32,
        in_chans: int = 3,
        num_classes: int = 0,
    ):
        if in_chans != 3:
            raise ValueError(f"CNNImageTower reads RGB images, not {in_chans} channels")
        super().__init__(image_size, channels, groups)
        self.num_features = num_features
        self.pool = AttentionPool2d(self.map_channels, feat_size=self.map_side, out_features=num_features, head_dim=head_width)

    def reset_classifier(self, num_classes: int = 0, global_pool: str | None = None) -> None:
        """timm's interface, as open_clip calls it: the tower has no classifier to remove."""
        if num_classes or global_pool:
            raise ValueError("CNNImageTower has no classifier head and pools by attention only")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(images))


def _cnn_tower(variant: str, pretrained: bool, **kwargs) -> CNNImageTower:
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights: it is trained by the project")
    return build_model_with_cfg(CNNImageTower, variant, pretrained=False, **kwargs)


@register_model
def shapes_cnn_tiny(pretrained: bool = False, **kwargs) -> CNNImageTower:
    """64px, levels of 32-64-128 channels at 32/16/8 px, attention pool to 256 (the demo's CLIP)."""
    return _cnn_tower("shapes_cnn_tiny", pretrained, image_size=64, channels=(32, 64, 128), num_features=256, **kwargs)


@register_model
def shapes_cnn_micro(pretrained: bool = False, **kwargs) -> CNNImageTower:
    """32px, levels of 8-16 channels at 16/8 px, attention pool to 32 (tests)."""
    return _cnn_tower(
        "shapes_cnn_micro", pretrained, image_size=32, channels=(8, 16), groups=4, num_features=32, head_width=8, **kwargs
    )
