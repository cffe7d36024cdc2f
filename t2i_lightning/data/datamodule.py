"""The shard DataModule every stage builds on: image + caption batches from WebDataset shards.

A stage's DataModule subclasses :class:`ShardDataModule` and overrides :meth:`decode` (and,
for joined embedding shards, :meth:`shard_urls`) while keeping the streaming, splitting,
skip counting and batching defined here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from .decode import collate, decode_image_caption
from .shards import ShardSpecError, resolve_shards
from .streams import RankWorkerShards, ShardAlignedBatches, build_stream
from .workers import detach_worker


class ShardDataModule(pl.LightningDataModule):
    """Batches of ``image`` (B x 3 x S x S, float32 in [-1, 1]), ``caption``, ``key``, ``meta``, ``skipped``.

    Args:
        train: training shards: a dataset directory (its ``train-*.tar``), a ``.tar`` file, a
            glob, a brace pattern, or None for no training data.
        val: validation shards, the same forms (a directory yields its ``val-*.tar``).
        test: test shards, the same forms (a directory yields its ``test-*.tar``).
        predict: shards for ``predict`` jobs (e.g. embedding extraction): a directory yields all
            its ``*.tar``; batches never span two shards (see ``ShardAlignedBatches``).
        image_size: side of the square images in a batch (antialiased resize).
        batch_size: samples per batch (per device).
        num_workers: DataLoader worker processes.
        epoch_size: training samples per epoch over all devices (the stream is resampled).
        shuffle_buffer: samples held for shuffling the training stream.
        hflip: mirror training images with probability 0.5, swapping left/right in their
            captions and metadata (off by default: shapes captions name sides).
        seed: seed of the shard resampling and shuffling.
    """

    missing_hint = "for the embedded dataset run `make data`"

    def __init__(
        self,
        train: str | None = "data/shapes",
        val: str | None = "data/shapes",
        test: str | None = None,
        predict: str | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 2,
        epoch_size: int = 10000,
        shuffle_buffer: int = 1000,
        hflip: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if image_size <= 0 or batch_size <= 0 or epoch_size <= 0:
            raise ValueError("image_size, batch_size and epoch_size must be positive")
        self.save_hyperparameters()
        self.urls: dict[str, list[str]] = {}
        # Set by a stage whose network needs its own preprocessing (e.g. CLIP's resize and
        # normalisation) before the dataloaders are built; None means resize to [-1, 1].
        self.image_transform: Callable[[Image.Image], torch.Tensor] | None = None
        self.excluded: set[str] = set()

    def shard_urls(self, split: str) -> list[str] | None:
        """The shards of ``split`` ("train", "val" or "test"), or None when not configured."""
        spec = getattr(self.hparams, split)
        if spec is None:
            return None
        try:
            return resolve_shards(spec, None if split == "predict" else split)
        except ShardSpecError as error:
            raise ShardSpecError(f"{error}\n  (configured as data.{split}; {self.missing_hint})") from None

    def setup(self, stage: str | None = None) -> None:
        """Resolve every configured split now, so a missing path fails before training starts."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            urls = self.shard_urls(split)
            if urls is not None:
                self.urls[split] = urls
        if stage == "fit" and "train" not in self.urls:
            raise ShardSpecError("Training needs shards: set data.train")

    def decode(self, sample: dict[str, Any], train: bool) -> dict[str, Any]:
        """Turn one raw webdataset sample into an example; raise to skip it (counted)."""
        return decode_image_caption(
            sample,
            self.hparams.image_size,
            hflip=train and self.hparams.hflip,
            transform=self.image_transform,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _on_accelerator(self) -> bool:
        """Whether the trainer runs on a device other than the CPU: there batches are copied from pinned
        memory (asynchronously) and the training workers persist across epochs, so their processes,
        shuffle buffers and caches are not rebuilt each epoch (an epoch is ``epoch_size`` samples, a few
        hundred steps on 8 GPUs). On the CPU neither pays, and persistent training workers would hold
        their memory through validation."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type != "cpu"

    def _loader(self, split: str) -> DataLoader:
        if split not in self.urls:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        if split not in self.urls:
            raise ShardSpecError(f"No {split} shards configured: set data.{split}")
        hp = self.hparams
        rank, world = self._rank()
        train = split == "train"
        stream = build_stream(
            RankWorkerShards(self.urls[split], rank, world, resampled=train, seed=hp.seed),
            functools.partial(self.decode, train=train),
            collate,
            hp.batch_size,
            shuffle_buffer=hp.shuffle_buffer if train else 0,
            partial=not train,
            seed=hp.seed,
        )
        workers = hp.num_workers
        if train:
            per_worker = max(1, hp.epoch_size // (hp.batch_size * world * max(1, workers)))
            stream = stream.with_epoch(per_worker).with_length(per_worker * max(1, workers), silent=True)
        else:
            workers = min(workers, max(1, len(self.urls[split]) // world))
        accelerated = self._on_accelerator()
        return DataLoader(
            stream, batch_size=None, num_workers=workers, persistent_workers=accelerated and train and workers > 0,
            pin_memory=accelerated, worker_init_fn=detach_worker if workers else None,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Shard-aligned batches of the ``predict`` shards not excluded by :meth:`exclude_shards`."""
        if "predict" not in self.urls:
            self.setup("predict")
        if "predict" not in self.urls:
            raise ShardSpecError("No predict shards configured: set data.predict")
        rank, world = self._rank()
        urls = [u for u in self.urls["predict"] if u not in self.excluded]
        stream = ShardAlignedBatches(
            urls, functools.partial(self.decode, train=False), collate, self.hparams.batch_size, rank, world
        )
        workers = min(self.hparams.num_workers, max(1, len(urls) // max(1, world)))
        workers = workers if urls else 0
        return DataLoader(stream, batch_size=None, num_workers=workers, worker_init_fn=detach_worker if workers else None)

    def exclude_shards(self, urls: set[str]) -> None:
        """Leave ``urls`` out of the predict stream (e.g. shards whose output already exists)."""
        self.excluded = set(urls)
