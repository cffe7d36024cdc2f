"""The judge: a CNN that reads a shapes image as its nine grid slots and background.

The evaluation's measuring instrument (exact alignment, and a feature space for Fréchet distance
and precision/recall on shapes). It is trained from scratch on the shapes images and their scene
metadata and shares no weights or training with the generator's CLIP. A residual CNN
(:class:`~t2i_lightning.nn.residual_cnn.ResidualFeatureMap`) turns the image into a feature map that is average-pooled onto the 3x3 grid of
cells the scenes are built on (:mod:`t2i_lightning.metrics.scene_labels`); shared heads read each
cell's features (plus a learned embedding of the cell) as empty or one of the kinds, a colour and a
size, and the whole image's pooled features as the background colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.shapes.scene import SIZES
from ..metrics.scene_labels import CELLS, COLOUR_NAMES, SLOT_CLASSES
from .residual_cnn import ResidualFeatureMap


class SceneJudge(ResidualFeatureMap):
    """``judge(images) -> logits``: ``slot`` (B x 9 x 9 classes), ``colour`` (B x 9 x 12), ``size``
    (B x 9 x 2), ``background`` (B x 12); ``judge.features(images)`` (B x channels[-1]).

    Args (those of :class:`~t2i_lightning.nn.residual_cnn.ResidualFeatureMap`):
        image_size: side it reads; images of another size (32px score samples, 256px upsampled
            ones) are resized to it, antialiased.
        channels: channels of the levels after the stem (which halves the resolution); each later
            level halves it again.
        groups: GroupNorm groups.
    """

    def __init__(self, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128), groups: int = 16):
        super().__init__(image_size, channels, groups)
        previous = self.map_channels
        self.cell_embedding = nn.Parameter(torch.zeros(CELLS, previous))
        self.cell_mlp = nn.Sequential(nn.Linear(previous, previous), nn.SiLU())
        self.slot_head = nn.Linear(previous, len(SLOT_CLASSES))
        self.colour_head = nn.Linear(previous, len(COLOUR_NAMES))
        self.size_head = nn.Linear(previous, len(SIZES))
        self.background_head = nn.Linear(previous, len(COLOUR_NAMES))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector of each image: the judge's feature space for distances."""
        return self.feature_map(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.feature_map(images)
        cells = F.adaptive_avg_pool2d(h, 3).flatten(2).transpose(1, 2)  # B x 9 x C, row-major cells
        cells = self.cell_mlp(cells + self.cell_embedding)
        return {
            "slot": self.slot_head(cells),
            "colour": self.colour_head(cells),
            "size": self.size_head(cells),
            "background": self.background_head(h.mean(dim=(2, 3))),
        }
