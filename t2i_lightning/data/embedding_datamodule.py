"""DataModule over embedding shards only (no images): what the translator trains on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..registry import DEMO_EMBEDDINGS, make_command
from .datamodule import ShardDataModule
from .decode import SampleError, sample_where
from .embeddings import IMAGE_MEMBER, TEXT_MEMBER, load_npy


def decode_embedding_pair(sample: dict[str, Any]) -> dict[str, Any]:
    """``img`` and ``txt`` float32 vectors and ``key`` of one embedding sample (skips NaN/Inf or missing)."""
    arrays = {}
    for name, member in (("img", IMAGE_MEMBER), ("txt", TEXT_MEMBER)):
        if member not in sample:
            raise SampleError(f"{sample_where(sample)} has no .{member}")
        array = load_npy(sample[member]).astype(np.float32)
        if not np.isfinite(array).all():
            raise SampleError(f"{sample_where(sample)}: .{member} holds NaN or Inf")
        arrays[name] = torch.from_numpy(array)
    return {**arrays, "key": sample["__key__"]}


class EmbeddingDataModule(ShardDataModule):
    """Batches of ``img`` (B x D), ``txt`` (B x D), ``key`` and ``skipped`` from embedding shards.

    Same arguments as :class:`ShardDataModule` (``train``/``val``/``test`` point at an
    embedding directory such as ``data/shapes/emb-shapes-cnn-tiny``); image options are unused.
    """

    missing_hint = f"extract embeddings with {make_command('embed')}"

    def __init__(
        self,
        train: str | None = DEMO_EMBEDDINGS,
        val: str | None = DEMO_EMBEDDINGS,
        test: str | None = None,
        batch_size: int = 256,
        num_workers: int = 1,
        epoch_size: int = 20000,
        shuffle_buffer: int = 5000,
        seed: int = 0,
    ):
        super().__init__(
            train=train, val=val, test=test, batch_size=batch_size, num_workers=num_workers,
            epoch_size=epoch_size, shuffle_buffer=shuffle_buffer, seed=seed,
        )  # fmt: skip

    def decode(self, sample: dict[str, Any], train: bool) -> dict[str, Any]:
        return decode_embedding_pair(sample)
