"""Judge stage: trains :class:`t2i_lightning.nn.judge.SceneJudge` on shapes images and their scene metadata.

The loss is the sum of the cross-entropies of the nine slots (empty or a kind), the occupied slots'
colours and sizes, and the background colour. Validation reports the judge's per-attribute accuracy
on real images (:func:`t2i_lightning.metrics.scene_labels.attribute_hits`: kind, colour, size and
position per object; count, background and the whole scene per image), the figures the evaluation
table's header quotes to show the instrument can be trusted.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.scene_labels import IGNORE, attribute_hits, scene_targets
from ..training.stage_training import StageTraining


def judge_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the mean cross-entropies of slots, colours and sizes (occupied slots only) and background."""
    total = F.cross_entropy(logits["background"], targets["background"])
    for name in ("slot", "colour", "size"):
        total = total + F.cross_entropy(logits[name].flatten(0, 1), targets[name].flatten(), ignore_index=IGNORE)
    return total


class JudgeStage(StageTraining, pl.LightningModule):
    """Args:
    net: :class:`~t2i_lightning.nn.judge.SceneJudge`.
    lr, weight_decay, warmup_steps, lr_decay: AdamW with warmup then "linear" or "cosine" decay.
    """

    samples = None  # no sample grid: StageTraining adds no callback

    def __init__(
        self, net: nn.Module, lr: float = 2e-3, weight_decay: float = 0.05, warmup_steps: int = 100, lr_decay: str = "cosine"
    ):
        super().__init__()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        self.net = net

    def _targets(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in scene_targets(batch["meta"]).items()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = judge_loss(self.net(batch["image"]), self._targets(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, targets = self.net(batch["image"]), self._targets(batch)
        self.log("val/loss", judge_loss(logits, targets), prog_bar=True, batch_size=len(batch["image"]), sync_dist=True)
        for name, hits in attribute_hits(logits, targets).items():
            # weighted by the number of objects (or images) in the batch, so the epoch value is exact
            self.log(f"val/acc_{name}", hits.mean(), batch_size=max(len(hits), 1), sync_dist=True)
