"""Sample quality during training: a small-N judge-space distance, logged so checkpoints can be chosen by it.

At the end of every validation run (with the EMA weights, which the EMA callback swaps in for
validation), rank 0 draws ``n`` samples with the stage being trained and the frozen judge scores them
against the first ``n`` validation images:

- ``val/judge_fd``: the Fréchet distance of the judge's features (:mod:`t2i_lightning.metrics.distances`);
  at small N it is biased upwards, so read it as a curve over training, not as the table's number;
- ``val/judge_aligned``: for a conditional stage, the share of samples whose judge reading satisfies
  its caption exactly (:mod:`t2i_lightning.metrics.alignment`).

What the samples are conditioned on follows the stage: a decoder on the validation images' CLIP image
embeddings (reconstructions), a text-conditioned decoder on their captions, the score model on nothing.
``val/judge_fd`` can be ModelCheckpoint's monitor (``mode: min``), as the Imagen-lite study selected
checkpoints by a sample metric. The judge is a frozen helper held here, never a submodule of the stage.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from ..eval.judging import judge_images
from ..metrics.alignment import alignment_report
from ..metrics.distances import feature_distances
from ..registry import default_checkpoint


class SampleQuality(pl.Callback):
    """Args:
    judge: judge checkpoint (`make judge`).
    n: samples per validation (and validation images they are compared with).
    steps: sampling steps of a diffusion decoder (DDIM).
    seed: noise seed, the same at every validation.
    """

    def __init__(self, judge: str = default_checkpoint("judge"), n: int = 32, steps: int = 25, seed: int = 0):
        super().__init__()
        if n <= 3:
            raise ValueError(f"n must be more than 3 (k-NN precision/recall and a covariance), got {n}")
        self.judge_path = judge
        self.n, self.steps, self.seed = n, steps, seed
        self.judge = None
        self.references: dict[str, Any] = {}
        self._real_features: torch.Tensor | None = None  # the references' judge features, computed once

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from ..pipeline import load_judge

        if self.judge is None:
            self.judge = load_judge(self.judge_path).net  # a missing or wrong checkpoint fails before training

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        have = len(self.references.get("caption", []))
        if have >= self.n:
            return
        take = self.n - have
        for name in ("image", "img_emb", "caption"):
            if name in batch:
                part = batch[name][:take]
                part = part.cpu() if isinstance(part, torch.Tensor) else list(part)
                previous = self.references.get(name)
                if previous is None:
                    self.references[name] = part
                else:
                    self.references[name] = torch.cat([previous, part]) if isinstance(part, torch.Tensor) else previous + part

    def _draw(self, pl_module: pl.LightningModule) -> torch.Tensor:
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        refs, n = self.references, len(self.references["caption"])
        if getattr(pl_module, "conditions_on_text", False):
            return pl_module.sample(refs["caption"], steps=self.steps, generator=generator, progress=False)
        if "img_emb" in refs and hasattr(pl_module, "condition"):
            embeddings = refs["img_emb"].to(pl_module.device)
            return pl_module.sample(embeddings, steps=self.steps, generator=generator, progress=False)
        return pl_module.sample(n, generator=generator, progress=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or len(self.references.get("caption", [])) <= 3:
            return
        with torch.no_grad():
            images = self._draw(pl_module).cpu()
        if self._real_features is None:
            self._real_features = judge_images(self.judge, self.references["image"])[1]
        scenes, features = judge_images(self.judge, images)
        metrics = {"val/judge_fd": feature_distances(self._real_features, features)["fd"]}
        unconditional = "img_emb" not in self.references and not getattr(pl_module, "conditions_on_text", False)
        if not unconditional:
            metrics["val/judge_aligned"] = alignment_report(self.references["caption"], scenes)["all"]
        pl_module.log_dict(metrics, rank_zero_only=True)
