"""Throwaway LightningModules and callbacks for CLI tests (e.g. one that predicts an image's mean colour)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn


class MeanColourRegressor(pl.LightningModule):
    def __init__(self, channels: int = 4, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 3),
        )

    def _step(self, batch, name: str) -> torch.Tensor:
        target = batch["image"].mean(dim=(2, 3))
        loss = nn.functional.mse_loss(self.net(batch["image"]), target)
        self.log(f"{name}/loss", loss, prog_bar=True, batch_size=len(target), sync_dist=name == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class NonFiniteAtStep(MeanColourRegressor):
    """The regressor whose loss is NaN at one global step (the numerical-fault tests)."""

    def __init__(self, nan_at_step: int = 3, channels: int = 4, lr: float = 1e-2):
        super().__init__(channels=channels, lr=lr)
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == self.hparams.nan_at_step else loss


class Heartbeat(pl.Callback):
    """Slows training to ``seconds`` per step and writes the global step to ``path`` after each
    (so a test can kill or signal a run in the middle, at a known point). The step is written through
    :func:`atomic_path`, so a reader never sees the file empty or half-written."""

    def __init__(self, path: str, seconds: float = 0.2):
        self.path, self.seconds = path, seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import time

        from t2i_lightning.data.shards import atomic_path

        time.sleep(self.seconds)
        with atomic_path(self.path) as temporary:
            temporary.write_text(str(trainer.global_step))


class RankRecorder(MeanColourRegressor):
    """The regressor that writes, per rank, the keys it trained on and those of its last validation,
    its own validation loss and the synchronised one (the DDP test)."""

    def __init__(self, record: str, channels: int = 4, lr: float = 1e-2):
        super().__init__(channels=channels, lr=lr)
        self.save_hyperparameters()
        self.seen = {"train": [], "val": []}
        self.val_sum = self.val_count = 0.0

    def training_step(self, batch, batch_idx):
        self.seen["train"].extend(batch["key"])
        self.seen.setdefault("draws", []).append(torch.randn(4).tolist())  # what a diffusion step's noise would be
        return super().training_step(batch, batch_idx)

    def on_validation_epoch_start(self):  # keep the last validation only
        self.seen["val"], self.val_sum, self.val_count = [], 0.0, 0.0

    def validation_step(self, batch, batch_idx):
        loss = super().validation_step(batch, batch_idx)
        if not self.trainer.sanity_checking:
            self.seen["val"].extend(batch["key"])
            self.val_sum += float(loss) * len(batch["key"])
            self.val_count += len(batch["key"])
        return loss

    def on_fit_end(self):
        import json
        from pathlib import Path

        record = {
            **self.seen,
            "val_loss_sum": self.val_sum,
            "val_count": self.val_count,
            "val_loss_synced": float(self.trainer.callback_metrics["val/loss"]),
        }
        Path(self.hparams.record).mkdir(parents=True, exist_ok=True)
        (Path(self.hparams.record) / f"rank{self.global_rank}.json").write_text(json.dumps(record))


class Gate(pl.Callback):
    """Holds a predict run before its batch ``after`` until the file ``path`` exists or the process has
    received SIGTERM (so a test can run a second command, or signal, while an extraction is at a known
    point). Gives up after ``timeout`` seconds rather than hang a test."""

    def __init__(self, path: str, after: int = 0, timeout: float = 300):
        self.path, self.after, self.timeout = path, after, timeout

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        import os
        import time

        deadline = time.monotonic() + self.timeout
        while batch_idx >= self.after and time.monotonic() < deadline:
            if os.path.exists(self.path) or trainer.received_sigterm:
                return
            time.sleep(0.05)
