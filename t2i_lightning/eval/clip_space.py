"""A CLIP as a measuring instrument: its image-embedding feature space and the CLIP score.

Any open_clip model (the project's CLIP, or a separate evaluation CLIP: name it in the table, since
a generator conditioned on a CLIP is flattered when judged by the same one). Images are fed through
the model's own evaluation preprocessing, exactly as embedding extraction does. The CLIP score is
100 × max(cos(image embedding, caption embedding), 0), torchmetrics' convention for CLIPScore
(Hessel et al. 2021, without their 2.5 rescaling). The CLIP runs on its own device; the embeddings come
back to the CPU, where the metrics are computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..data.image_io import tensor_to_images
from ..pipeline import clip_image_embeddings


class ClipInstrument:
    """``image_features(images)`` (N x D raw CLIP image embeddings) and ``clip_score(images, captions)``
    (N scores) for images as N x 3 x S x S tensors in [-1, 1]; ``name`` says which CLIP it is."""

    def __init__(self, clip: torch.nn.Module, tokenizer, name: str, batch_size: int = 64):
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        chunks = [
            clip_image_embeddings(self.clip, tensor_to_images(images[i : i + self.batch_size])).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(chunks).float()

    @torch.no_grad()
    def text_features(self, captions: Sequence[str]) -> torch.Tensor:
        device = next(self.clip.parameters()).device
        chunks = [
            self.clip.encode_text(self.tokenizer(list(captions[i : i + self.batch_size])).to(device)).cpu()
            for i in range(0, len(captions), self.batch_size)
        ]
        return torch.cat(chunks).float()

    def clip_score(
        self, images: torch.Tensor, captions: Sequence[str], image_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The CLIP score of each image with its caption; ``image_features``: the images' embeddings when they
        were computed already (:meth:`image_features`)."""
        if len(images) != len(captions):
            raise ValueError(f"Need one caption per image, got {len(captions)} for {len(images)} images")
        features = self.image_features(images) if image_features is None else image_features
        cosine = F.cosine_similarity(features, self.text_features(captions), dim=-1)
        return 100 * cosine.clamp(min=0)
