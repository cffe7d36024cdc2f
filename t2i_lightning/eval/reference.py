"""The real images an evaluation is measured against, read once from the shards.

``load_reference`` takes the first ``n`` samples of a split in shard order (deterministic: the same
images every run): their 64px images, captions, scene metadata and, when an embedding directory is
given, the CLIP image and text embeddings extraction wrote for them. The generated sets are drawn
for these captions (and these embeddings, for the decoder-only row); a second real set of the same
size from another split is the real-vs-real floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.datamodule import ShardDataModule
from ..data.joined import ImageEmbeddingDataModule


@dataclass
class ReferenceSet:
    images: torch.Tensor  # N x 3 x S x S in [-1, 1]
    captions: list[str]
    metas: list[dict]
    keys: list[str]
    img_emb: torch.Tensor | None = None  # N x D raw CLIP image embeddings
    txt_emb: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)


def load_reference(
    data: str, split: str, n: int, image_size: int = 64, embeddings: str | None = None, batch_size: int = 100
) -> ReferenceSet:
    """The first ``n`` samples of ``split`` ("val" or "test") of ``data`` (with ``embeddings`` joined)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    options = dict(train=None, val=None, test=None, image_size=image_size, batch_size=min(batch_size, n), num_workers=0)
    options[split] = data
    module = ImageEmbeddingDataModule(embeddings=embeddings, **options) if embeddings else ShardDataModule(**options)
    module.setup({"val": "validate", "test": "test"}[split])
    batches = []
    for batch in {"val": module.val_dataloader, "test": module.test_dataloader}[split]():
        batches.append(batch)
        if sum(len(b["caption"]) for b in batches) >= n:
            break
    count = sum(len(b["caption"]) for b in batches)
    if count < n:
        raise ValueError(f"{data} has only {count} readable {split} samples; ask for n <= {count}")

    def joined(name: str):
        values = [v for b in batches for v in b[name]] if name in batches[0] else None
        if values is None:
            return None
        return torch.stack(values)[:n] if isinstance(values[0], torch.Tensor) else values[:n]

    return ReferenceSet(
        images=joined("image"), captions=joined("caption"), metas=joined("meta"), keys=joined("key"),
        img_emb=joined("img_emb"), txt_emb=joined("txt_emb"),
    )  # fmt: skip


def images_at_size(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Reference images brought to a drawn row's size (antialiased bicubic), unchanged when they are it
    already: the ground truth of PSNR/SSIM, the base image of image guidance."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return torch.nn.functional.interpolate(images, size=size, mode="bicubic", antialias=True)
