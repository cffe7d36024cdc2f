"""Turning raw WebDataset samples into training examples, and examples into batches.

A raw sample is the dict webdataset yields for one key: ``__key__``, ``__url__`` and one bytes
entry per extension. Only images, text and JSON are decoded here (never pickle).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from .flip import flip_caption, flip_meta
from .image_io import IMAGE_EXTENSIONS, open_image, to_rgb


class SampleError(ValueError):
    """A sample that cannot be used (missing member, undecodable image, empty caption)."""


class ShardMismatchError(RuntimeError):
    """Shards that should mirror each other but do not (never skipped: it stops the run)."""


def sample_where(sample: dict) -> str:
    return f"sample '{sample.get('__key__', '?')}' in {sample.get('__url__', '?')}"


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """Centre-crop to a square, resize to ``size`` with antialiasing, and scale to [-1, 1] (CHW float32)."""
    if image.width != image.height:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def decode_caption(sample: dict[str, Any]) -> dict[str, Any]:
    """The ``caption``, ``key`` and ``meta`` of one raw sample, its image left undecoded (the latent route's
    training reads the latent instead). Raises :class:`SampleError` on a missing or empty caption or bad metadata."""
    if "txt" not in sample:
        raise SampleError(f"{sample_where(sample)} has no .txt caption")
    caption = " ".join(sample["txt"].decode("utf-8", errors="replace").split())
    if not caption:
        raise SampleError(f"{sample_where(sample)} has an empty caption")
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError as error:
            raise SampleError(f"{sample_where(sample)}: invalid .json ({error})") from error
    return {"caption": caption, "key": sample["__key__"], "meta": meta}


def decode_image_caption(
    sample: dict[str, Any],
    image_size: int,
    hflip: bool = False,
    rng: random.Random | None = None,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Decode one raw sample into ``image`` (3xSxS in [-1, 1]), ``caption``, ``key``, ``meta``.

    With ``hflip`` the image is mirrored with probability 0.5, and its caption and metadata
    are flipped to match (:mod:`t2i_lightning.data.flip`). ``transform`` (e.g. CLIP's own
    preprocessing) replaces the default resize-and-scale. Raises :class:`SampleError` with the
    sample's key and shard on any defect.
    """
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
    if ext is None:
        raise SampleError(f"{sample_where(sample)} has no image ({'/'.join(IMAGE_EXTENSIONS)})")
    try:
        image = to_rgb(open_image(sample[ext]))
    except Exception as error:  # PIL raises many types for bad bytes
        raise SampleError(f"{sample_where(sample)}: undecodable .{ext} ({error})") from error
    text = decode_caption(sample)
    caption, meta = text["caption"], text["meta"]
    if hflip and (rng or random).random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        caption = flip_caption(caption)
        meta = flip_meta(meta)
    return {
        "image": transform(image) if transform is not None else image_to_tensor(image, image_size),
        "caption": caption,
        "key": sample["__key__"],
        "meta": meta,
    }


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors and keep everything else (captions, keys, metadata dicts) as lists.

    webdataset's ``map`` re-attaches ``__key__`` to each example; ``key`` already holds it.
    """
    batch: dict[str, Any] = {}
    for name in (n for n in examples[0] if not n.startswith("__")):
        values = [example[name] for example in examples]
        batch[name] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
