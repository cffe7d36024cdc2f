"""The real images an evaluation is measured against, read once from the shards.

``load_reference`` takes the first ``n`` samples of a split in shard order (deterministic: the same
images every run), or all of them when the split has fewer: their 64px images, captions, metadata
and, when an embedding directory is given, the CLIP image and text embeddings extraction wrote for
them. The split's shards are resolved by :func:`~t2i_lightning.data.shards.resolve_shards`, so a
dataset without that split is an error naming the split and the splits it has, never another split's
images. The generated sets are drawn for these captions (and these embeddings, for the decoder-only
row); a second real set of the same size from another split is the real-vs-real floor.
:func:`load_evaluation_sets` reads both and brings them to one N, saying so when a split has fewer
images than asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

from ..data.datamodule import ShardDataModule
from ..data.joined import ImageEmbeddingDataModule
from ..data.shards import resolve_shards


@dataclass
class ReferenceSet:
    images: torch.Tensor  # N x 3 x S x S in [-1, 1]
    captions: list[str]
    metas: list[dict]
    keys: list[str]
    img_emb: torch.Tensor | None = None  # N x D raw CLIP image embeddings
    txt_emb: torch.Tensor | None = None
    source: dict = field(default_factory=dict)  # dataset, split and its shards (path, size, mtime): where it was read

    def __len__(self) -> int:
        return len(self.captions)

    def head(self, n: int) -> ReferenceSet:
        """The first ``n`` samples."""
        cut = {name: getattr(self, name) for name in ("images", "captions", "metas", "keys", "img_emb", "txt_emb")}
        return replace(self, **{name: None if value is None else value[:n] for name, value in cut.items()})


def shard_stamps(urls: list[str]) -> list[list]:
    """Path, size and modification time of each shard (what the images were read from; a remote shard's size
    and time are unknown: None)."""
    local = os.path.isfile
    return [[url, os.path.getsize(url) if local(url) else None, os.path.getmtime(url) if local(url) else None]
            for url in urls]  # fmt: skip


def load_reference(
    data: str, split: str, n: int, image_size: int = 64, embeddings: str | None = None, batch_size: int = 100
) -> ReferenceSet:
    """The first ``n`` samples of ``split`` (any split name: "val", "test"...) of ``data`` (with ``embeddings``
    joined), or all of them when it has fewer."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    urls = resolve_shards(data, split)  # a dataset split into named shards without ``split`` is refused, naming its splits
    options = dict(train=None, val=urls, image_size=image_size, batch_size=min(batch_size, n), num_workers=0)
    module = ImageEmbeddingDataModule(embeddings=embeddings, **options) if embeddings else ShardDataModule(**options)
    module.setup("validate")
    batches = []
    for batch in module.val_dataloader():
        batches.append(batch)
        if sum(len(b["caption"]) for b in batches) >= n:
            break
    if not sum(len(b["caption"]) for b in batches):
        raise ValueError(f"{data} has no readable {split} samples")

    def joined(name: str):
        values = [v for b in batches for v in b[name]] if name in batches[0] else None
        if values is None:
            return None
        return torch.stack(values)[:n] if isinstance(values[0], torch.Tensor) else values[:n]

    return ReferenceSet(
        images=joined("image"), captions=joined("caption"), metas=joined("meta"), keys=joined("key"),
        img_emb=joined("img_emb"), txt_emb=joined("txt_emb"),
        source={"data": str(data), "split": split, "shards": shard_stamps(urls)},
    )  # fmt: skip


def load_evaluation_sets(
    data: str, split: str, n: int, real_split: str | None = None, embeddings: str | None = None
) -> tuple[ReferenceSet, ReferenceSet | None, list[str]]:
    """The reference set (``split``), the second real set (``real_split``; None when not asked for) and what
    was said about their size: both are cut to the smaller of ``n`` and the images each split has, with a
    note per split that has fewer than ``n``."""
    ref = load_reference(data, split, n, embeddings=embeddings)
    real = load_reference(data, real_split, n) if real_split else None
    common = min(len(ref), len(real)) if real is not None else len(ref)
    notes = [f"only {len(found)} {name} images in {data}: using N={common}"
             for name, found in ((split, ref), (real_split, real)) if found is not None and len(found) < n]  # fmt: skip
    return ref.head(common), real.head(common) if real is not None else None, notes


def images_at_size(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Reference images brought to a drawn row's size (antialiased bicubic), unchanged when they are it
    already: the ground truth of PSNR/SSIM, the base image of image guidance."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return torch.nn.functional.interpolate(images, size=size, mode="bicubic", antialias=True)
