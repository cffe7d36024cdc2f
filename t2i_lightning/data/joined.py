"""Image shards joined by key with the embedding shards that mirror them (no copies): the decoder's data.

An image shard ``<dataset>/train-000003.tar`` is joined with ``<embeddings>/train-000003.tar``
(``KEY.img.npy``, ``KEY.txt.npy``). Keys the extractor skipped (corrupt samples) are corrupt on
the image side too and are skipped there; any other key missing from the embedding shard, or a
missing embedding shard, is a :class:`ShardMismatchError` that stops the run naming both shards.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..registry import DEMO_EMBEDDINGS, make_command
from ..registry import stage as registry_stage
from .datamodule import ShardDataModule
from .decode import ShardMismatchError, decode_image_caption
from .embeddings import IMAGE_MEMBER, TEXT_MEMBER, load_npy, read_stats, source_changed
from .inspect import read_samples


class EmbeddingLookup:
    """``key -> (image embedding, text embedding)`` of the embedding shard mirroring an image shard (the
    arrays of ``members``, made by ``make_target``'s stage: a subclass looks up other mirrored arrays).

    Keeps the ``capacity`` most recently used embedding shards. The shuffle buffer sits before
    decoding, so consecutive samples come from the two or three image shards the buffer spans: a
    single-shard cache would re-read an embedding shard for almost every sample.
    """

    members: tuple[str, ...] = (IMAGE_MEMBER, TEXT_MEMBER)
    made_by = "embed"
    what = "embedding"

    def __init__(self, directory: str | os.PathLike, capacity: int = 8):
        self.directory = Path(directory)
        self.capacity = capacity
        self._tables: OrderedDict[str, dict[str, tuple[np.ndarray, ...]]] = OrderedDict()
        self._checked: set[str] = set()  # image shards whose embeddings were checked to be theirs
        self.shard_reads = 0

    def mirror_of(self, image_shard: str) -> Path:
        return self.directory / Path(image_shard).name

    def _table(self, image_shard: str) -> dict[str, tuple[np.ndarray, ...]]:
        if image_shard in self._tables:
            self._tables.move_to_end(image_shard)
            return self._tables[image_shard]
        path = self.mirror_of(image_shard)
        if not path.is_file():
            raise ShardMismatchError(
                f"Image shard {image_shard} has no {self.what} shard {path}: run {make_command(self.made_by)} for this dataset"
            )
        if image_shard not in self._checked:
            if source_changed(path, image_shard):
                raise ShardMismatchError(
                    f"{self.what.capitalize()} shard {path} was extracted from another version of {image_shard} (its "
                    f"images have changed since, e.g. re-imported): re-run {make_command(self.made_by)}"
                )
            self._checked.add(image_shard)
        table = {s["__key__"]: tuple(load_npy(s[m]) for m in self.members) for s in read_samples(str(path))}
        self.shard_reads += 1
        self._tables[image_shard] = table
        if len(self._tables) > self.capacity:
            self._tables.popitem(last=False)
        return table

    def __call__(self, image_shard: str, key: str) -> tuple[np.ndarray, ...]:
        table = self._table(image_shard)
        if key not in table:
            raise ShardMismatchError(
                f"Key '{key}' of image shard {image_shard} is missing from {self.what} shard "
                f"{self.mirror_of(image_shard)}: it was extracted from other shards; re-run {make_command(self.made_by)}"
            )
        return table[key]


class ImageEmbeddingDataModule(ShardDataModule):
    """Batches of ``image``, ``caption``, ``key``, ``meta`` plus ``img_emb`` and ``txt_emb`` (B x D, float32).

    Args:
        embeddings: the embedding directory that mirrors the image shards
            (``data/shapes/emb-shapes-cnn-tiny``); its ``stats.json`` is checked to exist at setup.
        The other arguments are :class:`ShardDataModule`'s; ``hflip`` is refused because the
        embeddings describe the unflipped images.
    """

    missing_hint = f"for the embedded dataset run `make data {registry_stage('embed').make_target}`"

    def __init__(
        self,
        embeddings: str = DEMO_EMBEDDINGS,
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
            train=train, val=val, test=test, image_size=image_size, batch_size=batch_size,
            num_workers=num_workers, epoch_size=epoch_size, shuffle_buffer=shuffle_buffer, seed=seed,
        )  # fmt: skip
        self.lookup = EmbeddingLookup(embeddings)

    def setup(self, stage: str | None = None) -> None:
        read_stats(self.hparams.embeddings)  # a clear error now rather than in a worker
        super().setup(stage)

    def decode(self, sample: dict[str, Any], train: bool) -> dict[str, Any]:
        example = decode_image_caption(sample, self.hparams.image_size)
        image_emb, text_emb = self.lookup(sample["__url__"], sample["__key__"])
        return {
            **example,
            "img_emb": torch.from_numpy(image_emb.astype(np.float32)),
            "txt_emb": torch.from_numpy(text_emb.astype(np.float32)),
        }
