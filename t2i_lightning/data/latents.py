"""Autoencoder latents of image shards (the latent route): their files, and the DataModule that trains on them.

``make encode-latents`` writes ``<dataset>/latents/``: shards that mirror the image
shards (``KEY.latent.npy``, float16, C x H/f x W/f, the posterior means, unscaled) and ``stats.json``
(the ``scale_factor`` that brings them to unit variance, their shape, and the autoencoder that made them).
:class:`LatentDataModule` reads the image shards for their captions and metadata and joins each key's
latent (and, for the unCLIP decoder, its CLIP embeddings) by key; training batches skip the PNG decode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..registry import make_command
from ..registry import stage as registry_stage
from .decode import decode_caption, decode_image_caption
from .embeddings import STATS_NAME, read_stats
from .joined import EmbeddingLookup, ImageEmbeddingDataModule

LATENT_MEMBER = "latent.npy"


def latent_dir(dataset: str | os.PathLike) -> Path:
    """Where ``make encode-latents`` writes the latents of ``dataset`` (its ``stats.json`` names the autoencoder)."""
    return Path(dataset) / "latents"


def read_latent_stats(directory: str | os.PathLike) -> dict:
    """The ``stats.json`` of a latent directory, with a clear error when it is missing or is not one."""
    path = Path(directory) / STATS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No {STATS_NAME} in '{directory}': encode the latents first ({make_command('encode')})")
    stats = json.loads(path.read_text())
    if "scale_factor" not in stats:
        raise ValueError(f"'{directory}' holds no latents (its {STATS_NAME} has no scale_factor): {make_command('encode')} writes them")
    return stats


class LatentLookup(EmbeddingLookup):
    """``key -> (latent,)`` of the latent shard mirroring an image shard."""

    members = (LATENT_MEMBER,)
    made_by = "encode"
    what = "latent"


class LatentDataModule(ImageEmbeddingDataModule):
    """Batches of ``latent`` (C x h x w, float32, unscaled), ``caption``, ``key``, ``meta`` and, with
    ``embeddings``, ``img_emb`` and ``txt_emb``. Training batches carry no ``image`` (the PNG is not decoded:
    the latent stands for it); validation batches do, for the sample grids.

    Args:
        latents: the latent directory that mirrors the image shards (its ``stats.json`` is checked at setup).
        embeddings: the CLIP embedding directory (the unCLIP decoder), or None (the text decoder).
        The other arguments are :class:`ShardDataModule`'s (``image_size``: of the validation images).
    """

    missing_hint = f"for the embedded dataset run `make data {registry_stage('encode').make_target}`"

    def __init__(
        self,
        latents: str,
        embeddings: str | None = None,
        train: str | None = "data/shapes",
        val: str | None = "data/shapes",
        test: str | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 2,
        epoch_size: int = 10000,
        shuffle_buffer: int = 1000,
        seed: int = 0,
    ):
        super().__init__(
            embeddings=embeddings or "", train=train, val=val, test=test, image_size=image_size, batch_size=batch_size,
            num_workers=num_workers, epoch_size=epoch_size, shuffle_buffer=shuffle_buffer, seed=seed,
        )  # fmt: skip
        self.latent_lookup = LatentLookup(latents)
        if not embeddings:
            self.lookup = None

    def setup(self, stage: str | None = None) -> None:
        read_latent_stats(self.hparams.latents)  # a clear error now rather than in a worker
        if self.hparams.embeddings:
            read_stats(self.hparams.embeddings)
        super(ImageEmbeddingDataModule, self).setup(stage)

    def decode(self, sample: dict[str, Any], train: bool) -> dict[str, Any]:
        example = decode_caption(sample) if train else decode_image_caption(sample, self.hparams.image_size)
        (latent,) = self.latent_lookup(sample["__url__"], sample["__key__"])
        example["latent"] = torch.from_numpy(latent.astype(np.float32))
        if self.lookup is not None:
            image_emb, text_emb = self.lookup(sample["__url__"], sample["__key__"])
            example["img_emb"] = torch.from_numpy(image_emb.astype(np.float32))
            example["txt_emb"] = torch.from_numpy(text_emb.astype(np.float32))
        return example
