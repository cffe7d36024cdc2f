"""Translator stage: regress CLIP image embeddings from CLIP text embeddings (MSE).

Both sides are standardised per dimension with the extraction's ``stats.json``; the statistics
are buffers of the module, so a checkpoint alone maps captions' text embeddings to image
embeddings. Logged beside the MSE, on the same batches, two identity baselines:

- ``identity_mse``, the study's identity model: the text embedding taken as the prediction of the
  image embedding, scored as the translator is (standardised with the image statistics), so the
  modality gap between CLIP's text and image embeddings counts against it;
- ``identity_mse_standardised``, stricter: each side standardised with its own statistics and
  output = input, 2 - 2 x the per-dimension correlation (the gap removed; above 1 is worse than
  predicting the mean);

and the cosine between predicted and true image embeddings, and retrieval R@1 of each prediction
among all validation image embeddings (only its own pair counts as a hit).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from ..metrics.retrieval import recall_at_k
from ..registry import make_command
from .embedding_stats import EmbeddingStatsMixin


class TranslatorStage(EmbeddingStatsMixin, pl.LightningModule):
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
        self.init_embedding_stats(stats, {"txt": net.in_dim, "img": net.out_dim})
        self._val: dict[str, list] = {}

    def load_stats(self, stats: dict) -> None:
        if stats["dim"] != self.net.in_dim or stats["dim"] != self.net.out_dim:
            dim = stats["dim"]
            raise ValueError(
                f"Embeddings have dim {dim} but the translator maps {self.net.in_dim}->{self.net.out_dim}: pass "
                f"--model.init_args.net.init_args.in_dim {dim} --model.init_args.net.init_args.out_dim {dim} "
                f"({make_command('translator')} reads the dim from stats.json)"
            )
        self.copy_stats(stats, ("txt", "img"))

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
        identity = F.mse_loss(self.standardize_image(batch["txt"]), target)  # the study's: text emb as image emb
        identity_standardised = F.mse_loss(source, target)  # output = input between the standardised spaces
        predicted_raw = prediction * self.std_img + self.mean_img
        cosine = F.cosine_similarity(predicted_raw, batch["img"], dim=-1).mean()
        n = len(batch["key"])
        self.log(f"{name}/mse", loss, prog_bar=True, batch_size=n, sync_dist=name != "train")
        self.log_dict(
            {f"{name}/identity_mse": identity, f"{name}/identity_mse_standardised": identity_standardised,
             f"{name}/cosine": cosine},
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
        # checked after each validation only: a run that max_steps ends part way through an epoch has no
        # val/mse at that epoch's end, and checking then raised (and wrote no checkpoint)
        return [
            EarlyStopping(monitor="val/mse", mode="min", patience=self.hparams.patience, check_on_train_epoch_end=False)
        ]
