"""Translator stage: regress CLIP image embeddings from CLIP text embeddings (MSE).

Both sides are standardised per dimension with the extraction's ``stats.json``; the statistics
are buffers of the module, so a checkpoint alone maps captions' text embeddings to image
embeddings. Logged beside the MSE: the study's identity baseline on the same batches (the
standardised text embedding taken as the standardised image embedding: 2 - 2 x the
per-dimension correlation, so above 1 means worse than predicting the mean), the cosine between
predicted and true image embeddings, and retrieval R@1 of each prediction among all validation
image embeddings (only its own pair counts as a hit).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from ..data.embeddings import read_stats
from ..eval.retrieval import recall_at_k


class TranslatorStage(pl.LightningModule):
    """Args:
    net: the network (``t2i_lightning.nn.translator.ResidualMLP``).
    stats: ``stats.json`` of the embedding directory (copied into the checkpoint).
    lr, weight_decay: AdamW. patience: early stopping on ``val/mse`` (validation runs).
    """

    def __init__(
        self, net: nn.Module, stats: str | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
        patience: int = 5,
    ):  # fmt: skip
        super().__init__()
        with (
            warnings.catch_warnings()
        ):  # the net's config is kept on purpose: load_from_checkpoint rebuilds it
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        self.net = net
        for name, dim in (("txt", net.in_dim), ("img", net.out_dim)):
            self.register_buffer(f"mean_{name}", torch.zeros(dim))
            self.register_buffer(f"std_{name}", torch.ones(dim))
        self.clip_identity: dict[str, Any] = {}
        self.stats_loaded = False
        if stats is not None and os.path.isfile(stats):
            self.load_stats(read_stats(os.path.dirname(stats) or "."))
        elif stats is not None:
            warnings.warn(
                f"Translator stats file not found: {stats} (fine when loading a checkpoint)", stacklevel=2
            )
        self._val: dict[str, list] = {}

    def load_stats(self, stats: dict) -> None:
        if stats["dim"] != self.net.in_dim or stats["dim"] != self.net.out_dim:
            raise ValueError(
                f"Embeddings have dim {stats['dim']} but the translator maps {self.net.in_dim}->{self.net.out_dim}"
            )
        for name in ("mean_txt", "std_txt", "mean_img", "std_img"):
            getattr(self, name).copy_(torch.tensor(stats[name], dtype=torch.float32))
        self.clip_identity = {
            k: stats.get(k) for k in ("model", "pretrained", "checkpoint_sha256", "clip_id")
        }
        self.stats_loaded = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["clip_identity"] = self.clip_identity

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.clip_identity = checkpoint.get("clip_identity", {})
        self.stats_loaded = True

    def on_fit_start(self) -> None:
        if not self.stats_loaded:
            raise FileNotFoundError(
                f"Translator needs the embeddings' stats.json (model.init_args.stats = {self.hparams.stats})"
            )

    def standardize_text(self, text: torch.Tensor) -> torch.Tensor:
        return (text - self.mean_txt) / self.std_txt

    def standardize_image(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean_img) / self.std_img

    def forward(self, text_embedding: torch.Tensor) -> torch.Tensor:
        """Raw CLIP text embedding(s) -> predicted raw CLIP image embedding(s)."""
        return self.net(self.standardize_text(text_embedding)) * self.std_img + self.mean_img

    def _step(self, batch: dict[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.standardize_image(batch["img"])
        source = self.standardize_text(batch["txt"])
        prediction = self.net(source)
        loss = F.mse_loss(prediction, target)
        identity = F.mse_loss(source, target)  # the identity model: output = input
        predicted_raw = prediction * self.std_img + self.mean_img
        cosine = F.cosine_similarity(predicted_raw, batch["img"], dim=-1).mean()
        n = len(batch["key"])
        self.log(f"{name}/mse", loss, prog_bar=True, batch_size=n, sync_dist=name != "train")
        self.log_dict(
            {f"{name}/identity_mse": identity, f"{name}/cosine": cosine},
            batch_size=n,
            sync_dist=name != "train",
        )
        return loss, predicted_raw

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def on_validation_epoch_start(self) -> None:
        self._val = {"pred": [], "img": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, predicted = self._step(batch, "val")
        self._val["pred"].append(F.normalize(predicted.float(), dim=-1).cpu())
        self._val["img"].append(F.normalize(batch["img"].float(), dim=-1).cpu())

    def on_validation_epoch_end(self) -> None:
        if self._val.get("pred"):
            predicted, images = torch.cat(self._val["pred"]), torch.cat(self._val["img"])
            r1 = recall_at_k(predicted @ images.T, lambda q, i: q == i, ks=(1,))[1]
            self.log("val/R@1", r1)
        self._val = {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def configure_callbacks(self) -> list[pl.Callback]:
        return [EarlyStopping(monitor="val/mse", mode="min", patience=self.hparams.patience)]
