"""A throwaway LightningModule for CLI tests: predicts an image's mean colour from the image."""

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
        self.log(f"{name}/loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
