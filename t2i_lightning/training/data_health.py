"""Logging of samples the data pipeline skipped (corrupt or incomplete), and a stop when too many are.

A few bad samples in web-scraped data are normal and are skipped; many mean a broken download or
a wrong path, and training on what is left would quietly give a different dataset. So when more
than ``max_skip_rate`` of the training samples taken from the shards so far (read or lost, once
``min_samples`` were) were skipped, the run stops with :class:`SkipRateError`, naming the shards
the skips came from.

Under DDP every rank reads its own shards, so a broken shard may be one rank's alone: the counts are
summed over the ranks every ``sync_every`` batches (one small all-reduce) and every rank judges the
same totals, so all of them stop together instead of the others waiting on the stopped one until the
collective times out. Between those checks nothing waits on the device: the counts are Python ints.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist


class SkipRateError(ValueError):
    """Too large a share of the training samples could not be read."""


class SkippedSamplesLogger(pl.Callback):
    """Sums ``batch["skipped"]`` (set by :mod:`t2i_lightning.data.streams`), logs the totals, and stops
    the run when the training skip rate passes ``max_skip_rate``.

    Logs ``data/skipped_train`` (cumulative, each step), ``data/skipped_train_epoch`` (per epoch)
    and ``data/skipped_val`` (per validation run). Batches without the key are ignored.

    Args:
        max_skip_rate: the largest tolerated share of skipped training samples (0.01); None never stops.
        min_samples: the rate is judged only once this many training samples were read or skipped.
        sync_every: with several ranks, the rate is judged on all ranks' counts every this many batches.
    """

    def __init__(self, max_skip_rate: float | None = 0.01, min_samples: int = 1000, sync_every: int = 50) -> None:
        if max_skip_rate is not None and not 0 <= max_skip_rate < 1:
            raise ValueError(f"max_skip_rate must be in [0, 1), got {max_skip_rate}")
        if sync_every < 1:
            raise ValueError(f"sync_every must be at least 1, got {sync_every}")
        self.max_skip_rate, self.min_samples, self.sync_every = max_skip_rate, min_samples, sync_every
        self.train_total = self.train_read = self.train_epoch = self.val_epoch = self.batches = 0
        self.bad_shards: Counter[str] = Counter()

    @staticmethod
    def _count(batch: Any) -> int:
        return int(batch["skipped"]) if isinstance(batch, dict) and "skipped" in batch else 0  # a Python int: no sync

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.train_epoch = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        skipped = self._count(batch)
        self.train_total += skipped
        self.train_epoch += skipped
        if isinstance(batch, dict):
            self.train_read += batch.get("shard_samples", len(batch.get("key", ())) + skipped)
            self.bad_shards.update(batch.get("skipped_shards", ()))
        pl_module.log(
            "data/skipped_train", float(self.train_total), on_step=True, on_epoch=False, reduce_fx="max"
        )
        self.batches += 1
        world = trainer.world_size if trainer is not None else 1
        if self.max_skip_rate is not None and (world == 1 or self.batches % self.sync_every == 0):
            self._check_rate(pl_module.device if world > 1 else None)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("data/skipped_train_epoch", float(self.train_epoch), on_step=False, on_epoch=True)

    def _check_rate(self, device: torch.device | None) -> None:
        """Stop when the skip rate is over the limit: this process's counts, or with ``device`` (several
        ranks) all ranks' sums, reduced on ``device`` so every rank comes to the same decision."""
        skipped, read, bad_shards = self.train_total, self.train_read, self.bad_shards
        if device is not None:
            counts = torch.tensor([skipped, read], dtype=torch.float64, device=device)
            dist.all_reduce(counts)
            skipped, read = (int(c) for c in counts.tolist())
        if read < self.min_samples or skipped <= self.max_skip_rate * read:
            return
        if device is not None:  # every rank is here: the shards of all of them
            gathered: list[Counter[str] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.bad_shards)
            bad_shards = sum(gathered, Counter())
        shards = ", ".join(f"{url} ({count})" for url, count in bad_shards.most_common(10))
        raise SkipRateError(
            f"{skipped} of {read} training samples were skipped ({skipped / read:.1%}, more than "
            f"the {self.max_skip_rate:.1%} allowed); skips by shard: {shards}. Repair or remove those shards "
            "(`t2i data inspect` reads a dataset), or raise SkippedSamplesLogger's max_skip_rate"
        )

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val_epoch = 0

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.val_epoch += self._count(batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("data/skipped_val", float(self.val_epoch), reduce_fx="sum")

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_total": self.train_total,
            "train_read": self.train_read,
            "bad_shards": dict(self.bad_shards),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_total = state_dict.get("train_total", 0)
        self.train_read = state_dict.get("train_read", state_dict.get("train_seen", 0) + self.train_total)
        self.bad_shards = Counter(state_dict.get("bad_shards", {}))
