"""Logging of samples the data pipeline skipped (corrupt or incomplete), per step and per epoch."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class SkippedSamplesLogger(pl.Callback):
    """Sums ``batch["skipped"]`` (set by :mod:`t2i_lightning.data.streams`) and logs the totals.

    Logs ``data/skipped_train`` (cumulative, each step it changes and at epoch end) and
    ``data/skipped_val`` (per validation run). Batches without the key are ignored.
    """

    def __init__(self) -> None:
        self.train_total = 0
        self.val_epoch = 0

    @staticmethod
    def _count(batch: Any) -> int:
        return int(batch["skipped"]) if isinstance(batch, dict) and "skipped" in batch else 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_total += self._count(batch)
        pl_module.log(
            "data/skipped_train", float(self.train_total), on_step=True, on_epoch=False, reduce_fx="max"
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

    def state_dict(self) -> dict[str, int]:
        return {"train_total": self.train_total}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.train_total = state_dict.get("train_total", 0)
