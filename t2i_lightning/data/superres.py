"""Paired high/low-resolution crops for the upsampler: the shard DataModule, cut for super-resolution.

Each image is decoded at the high resolution (256 for 64 -> 256), a square crop of it is taken
(random in training, central otherwise; its corner on a multiple of the factor, so it is also a
crop of the low-resolution image's pixel grid), and the low-resolution example is that crop
downsampled by the factor with :func:`downsample`, the same operator the upsampler's evaluation
uses. Training on small crops is cheap; the fully convolutional U-Net is
sampled on whole images (Imagen, Saharia et al. 2022, trains its 256 -> 1024 model on 64 -> 256 crops).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .datamodule import ShardDataModule
from .decode import collate, decode_image_caption
from .embeddings import read_stats
from .inspect import read_samples
from .joined import EmbeddingLookup


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """B x C x H x W in [-1, 1] -> B x C x H/factor x W/factor: antialiased bicubic, clamped to [-1, 1]."""
    if images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"Image size {tuple(images.shape[-2:])} is not divisible by the factor {factor}")
    small = F.interpolate(
        images, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False
    )
    return small.clamp(-1, 1)


def crop_corner(size: int, crop: int, factor: int, rng: random.Random | None) -> tuple[int, int]:
    """Top-left corner of a ``crop``-pixel square in a ``size``-pixel image, on a multiple of ``factor``:
    random when ``rng`` is given, else the central one."""
    slots = (size - crop) // factor
    if rng is None:
        return (slots // 2) * factor, (slots // 2) * factor
    return rng.randint(0, slots) * factor, rng.randint(0, slots) * factor


class SuperResDataModule(ShardDataModule):
    """Batches of ``image`` (high-resolution crops, B x 3 x crop x crop in [-1, 1]), ``low_res``
    (the same crops downsampled, B x 3 x crop/factor x crop/factor), ``caption``, ``key``, ``meta``,
    ``skipped``, and ``img_emb`` (B x D) when ``embeddings`` is given.

    Args:
        image_size: the high resolution images are decoded at (256).
        factor: the upsampling factor (4).
        crop: side of the high-resolution crops (a multiple of ``factor``); None for whole images.
        embeddings: an embedding directory mirroring the image shards (for an upsampler conditioned
            on CLIP image embeddings), or None.
        The other arguments are :class:`ShardDataModule`'s (``hflip`` mirrors the pair, not the caption's
        sides: the upsampler reads no caption).
    """

    def __init__(
        self,
        train: str | None = "data/shapes",
        val: str | None = "data/shapes",
        test: str | None = None,
        image_size: int = 256,
        factor: int = 4,
        crop: int | None = 64,
        embeddings: str | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        epoch_size: int = 10000,
        shuffle_buffer: int = 1000,
        seed: int = 0,
    ):
        super().__init__(
            train=train, val=val, test=test, image_size=image_size, batch_size=batch_size,
            num_workers=num_workers, epoch_size=epoch_size, shuffle_buffer=shuffle_buffer, seed=seed,
        )  # fmt: skip
        if factor < 2 or image_size % factor:
            raise ValueError(f"factor must be at least 2 and divide image_size {image_size}, got {factor}")
        if crop is not None and not (0 < crop <= image_size and crop % factor == 0):
            raise ValueError(f"crop must be a multiple of factor {factor} in (0, {image_size}], got {crop}")
        self.lookup = EmbeddingLookup(embeddings) if embeddings else None

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.embeddings:
            read_stats(self.hparams.embeddings)  # a clear error now rather than in a worker
        super().setup(stage)

    def decode(self, sample: dict[str, Any], train: bool) -> dict[str, Any]:
        hp = self.hparams
        if hp.crop is None:
            return self.pair(sample)
        return self.pair(
            sample, (hp.crop, crop_corner(hp.image_size, hp.crop, hp.factor, random if train else None))
        )

    def pair(self, sample: dict[str, Any], crop: tuple[int, tuple[int, int]] | None = None) -> dict[str, Any]:
        """``sample`` decoded at the high resolution and cut to ``crop`` = (side, (top, left)) (None: the
        whole image), with its downsampled ``low_res`` and, when configured, its ``img_emb``."""
        hp = self.hparams
        example = decode_image_caption(sample, hp.image_size)
        image = example["image"]
        if crop is not None:
            side, (top, left) = crop
            image = image[:, top : top + side, left : left + side].contiguous()
        example["image"] = image
        example["low_res"] = downsample(image[None], hp.factor)[0]
        if self.lookup is not None:
            image_emb, _ = self.lookup(sample["__url__"], sample["__key__"])
            example["img_emb"] = torch.from_numpy(image_emb.astype(np.float32))
        return example

    def reference_pairs(self, n: int, split: str = "val") -> dict[str, Any]:
        """The first ``n`` samples of ``split`` as whole images (no crop), collated like a batch: the
        fixed images of the sample grid and of the upsampler's evaluation."""
        examples: list[dict[str, Any]] = []
        for url in self.shard_urls(split) or []:
            examples += [self.pair({**s, "__url__": url}) for s in read_samples(url, limit=n - len(examples))]
            if len(examples) >= n:
                break
        if not examples:
            raise ValueError(
                f"No {split} images to take reference pairs from (data.{split} = {self.hparams[split]})"
            )
        return collate(examples)
