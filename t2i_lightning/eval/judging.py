"""Reading images with the judge: each image's scene (for exact alignment) and its pooled features
(the judge feature space for distances), batched, without gradients; and whether a reference set is
one the judge can read at all (shapes scenes, whose metadata hold every object: real photos are not)."""

from __future__ import annotations

import torch

from ..metrics.scene_labels import attribute_hits, decode_scenes, scene_targets
from ..nn.judge import SceneJudge

SCENE_FIELDS = ("objects", "background")
"""What a sample's metadata hold when it is a shapes scene (:func:`~t2i_lightning.metrics.scene_labels.scene_targets`
reads them)."""


def shapes_scenes(metas: list[dict]) -> bool:
    """Whether every sample's metadata describe a shapes scene: the judge's feature space and the exact
    alignment are defined for those only."""
    return bool(metas) and all(isinstance(meta, dict) and all(f in meta for f in SCENE_FIELDS) for meta in metas)


@torch.no_grad()
def judge_images(judge: SceneJudge, images: torch.Tensor, batch_size: int = 64) -> tuple[list[dict], torch.Tensor]:
    """Scenes (metadata form) and features (N x D) of N x 3 x S x S images in [-1, 1], any S."""
    scenes, features = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(next(judge.parameters()).device)
        scenes += decode_scenes(judge(batch))
        features.append(judge.features(batch).cpu())
    return scenes, torch.cat(features) if features else torch.empty(0)


@torch.no_grad()
def judge_accuracy(judge: SceneJudge, images: torch.Tensor, metas: list[dict], batch_size: int = 64) -> dict[str, float]:
    """The judge's per-attribute accuracy on real images with their scene metadata (its credibility)."""
    device = next(judge.parameters()).device
    hits: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        logits = judge(images[start : start + batch_size].to(device))
        targets = {k: v.to(device) for k, v in scene_targets(metas[start : start + batch_size]).items()}
        for name, value in attribute_hits(logits, targets).items():
            hits.setdefault(name, []).append(value.cpu())
    return {name: torch.cat(values).mean().item() for name, values in hits.items()}
