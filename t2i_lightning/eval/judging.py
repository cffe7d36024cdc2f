"""Reading images with the judge: each image's scene (for exact alignment) and its pooled features
(the judge feature space for distances), batched, without gradients."""

from __future__ import annotations

import torch

from ..nn.judge import SceneJudge
from .scene_labels import decode_scenes


@torch.no_grad()
def judge_images(judge: SceneJudge, images: torch.Tensor, batch_size: int = 64) -> tuple[list[dict], torch.Tensor]:
    """Scenes (metadata form) and features (N x D) of N x 3 x S x S images in [-1, 1], any S."""
    scenes, features = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(next(judge.parameters()).device)
        scenes += decode_scenes(judge(batch))
        features.append(judge.features(batch).cpu())
    return scenes, torch.cat(features) if features else torch.empty(0)
