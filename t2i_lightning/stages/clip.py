"""CLIP stage: train (or load) an open_clip model on image-caption shards.

Contrastive training with open_clip's ``ClipLoss`` and a learned temperature (Radford et al.
2021, eq. in fig. 3), optionally plus the caption-word loss of
:class:`~t2i_lightning.nn.caption_words.CaptionWordHead`, AdamW with warmup and cosine decay. Validation logs cross-modal retrieval
R@1/R@5 (a hit on shapes is any item whose attributes satisfy the caption), the mean cosine of
matched pairs, and zero-shot colour/shape accuracy on single-object scenes.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import open_clip
import torch
import torch.distributed as dist

from ..metrics.retrieval import retrieval_metrics
from ..metrics.zeroshot import zero_shot_accuracy
from ..nn.caption_words import CaptionWordHead
from ..nn.clip import batched_preprocess_for, create_clip, tokenizer_for
from ..registry import DEMO_CLIP
from ..training.optim import adamw_with_warmup, decay_groups

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clips the learned inverse temperature at 100


class CLIPStage(pl.LightningModule):
    """An open_clip model trained contrastively; also the loader of pretrained CLIPs.

    Args:
        model_name: open_clip model name: the project's ``shapes-cnn-tiny`` or any open_clip
            model (``ViT-B-32`` ...).
        pretrained: None to train from scratch, an open_clip tag (``laion2b_s34b_b79k``), or a
            local weights file.
        lr, weight_decay, warmup_steps: AdamW with linear warmup then cosine decay to 0 at the
            trainer's last step.
        word_loss_weight: weight of the caption-word loss added to the contrastive one (0: none);
            its head is a training aid, not part of the CLIP's weights.
    """

    def __init__(
        self,
        model_name: str = DEMO_CLIP,
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        warmup_steps: int = 100,
        word_loss_weight: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.clip = create_clip(model_name, pretrained)
        self.tokenizer = tokenizer_for(model_name)
        self.preprocess = batched_preprocess_for(self.clip)
        self.loss_fn = open_clip.ClipLoss()
        self.word_head = self._word_head() if word_loss_weight > 0 else None
        self._val: dict[str, list] = {}

    def _word_head(self) -> CaptionWordHead:
        special = [getattr(self.tokenizer, name, None) for name in ("sot_token_id", "eot_token_id")]
        if None in special:
            raise ValueError(
                f"word_loss_weight needs an open_clip tokenizer with start and end tokens; "
                f"{type(self.tokenizer).__name__} has none"
            )
        return CaptionWordHead(self.clip.text_projection.shape[-1], self.clip.vocab_size, [0, *special])

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "image_transform"):
            datamodule.image_transform = self.preprocess.image
        world = self.trainer.world_size
        self.loss_fn = open_clip.ClipLoss(gather_with_grad=world > 1, rank=self.global_rank, world_size=world)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(captions).to(self.device)
        return self.clip.encode_text(tokens, normalize=True)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images, normalize=True)

    def _features(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Both sides' normalised features and the losses: ``loss`` (contrastive) and, with the word
        head, ``word_loss_image`` and ``word_loss_text``."""
        tokens = self.tokenizer(batch["caption"]).to(self.device)
        image_features = self.encode_image(self.preprocess.batch(batch["image"]))
        text_features = self.clip.encode_text(tokens, normalize=True)
        losses = {"loss": self.loss_fn(image_features, text_features, self.clip.logit_scale.exp())}
        if self.word_head is not None:
            words = self.word_head.targets(tokens)
            losses["word_loss_image"] = self.word_head.loss(image_features, words)
            losses["word_loss_text"] = self.word_head.loss(text_features, words)
        return image_features, text_features, losses

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss trained on: contrastive, plus ``word_loss_weight`` times the mean of both sides' word losses."""
        if self.word_head is None:
            return losses["loss"]
        return losses["loss"] + self.hparams.word_loss_weight * (losses["word_loss_image"] + losses["word_loss_text"]) / 2

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        _, _, losses = self._features(batch)
        total = self.total_loss(losses)
        scale = self.clip.logit_scale.exp()
        n = len(batch["caption"])
        self.log("train/loss", losses.pop("loss"), prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        self.log_dict({"train/logit_scale": scale, "train/temperature": 1.0 / scale}, batch_size=n)
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            self.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def on_validation_epoch_start(self) -> None:
        self._val = {"image": [], "text": [], "caption": [], "meta": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        image_features, text_features, losses = self._features(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch["caption"]), sync_dist=True)
        self._val["image"].append(image_features.float().cpu())
        self._val["text"].append(text_features.float().cpu())
        self._val["caption"] += batch["caption"]
        self._val["meta"] += batch["meta"]

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("image"):
            return
        collected = self._gather(self._val)
        images, texts = torch.cat(collected["image"]), torch.cat(collected["text"])
        metrics = retrieval_metrics(images, texts, collected["caption"], collected["meta"])
        zero_shot = zero_shot_accuracy(images, collected["meta"], lambda p: self.encode_text(p).float().cpu())
        if zero_shot["n"]:
            metrics |= {
                "zeroshot_colour_acc": zero_shot["colour_acc"],
                "zeroshot_shape_acc": zero_shot["shape_acc"],
            }
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, rank_zero_only=True)
        self._val = {}

    def _gather(self, parts: dict[str, list]) -> dict[str, list]:
        """All ranks' validation features, captions and metadata (identity on one process)."""
        if not (dist.is_available() and dist.is_initialized()) or self.trainer.world_size == 1:
            return parts
        gathered: list = [None] * self.trainer.world_size
        dist.all_gather_object(gathered, parts)
        return {key: [item for part in gathered for item in part[key]] for key in parts}

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_with_warmup(
            decay_groups(self.named_parameters(), hp.weight_decay), hp.lr, hp.weight_decay, hp.warmup_steps, total
        )
