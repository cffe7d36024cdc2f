"""Captioner stage: a noise-conditioned captioner p(caption | x_σ, σ) for guiding the score model.

Each training image is corrupted at a level drawn uniformly from the score model's σ_1 … σ_L and
σ = 0 (clean), x_σ = x + σz, and the captioner (:class:`t2i_lightning.nn.captioner.NoisyCaptioner`)
is trained by teacher-forced cross-entropy on one of the image's captions (any of the captions in
its metadata with ``all_captions``, so that it learns p(y | x) over the phrasings a user may
type). Validation reports, at σ = 0, the middle level and σ_1: the loss, the token accuracy, and
the share of greedy captions that describe the image exactly (:mod:`t2i_lightning.metrics.captions`).
The noise levels must be the score model's (``t2i sample --method score`` checks).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..diffusion import geometric_sigmas
from ..metrics.captions import caption_is_exact
from ..training.stage_training import StageTraining


def level_name(sigma: float) -> str:
    """A metric suffix for a noise level: ``sigma0``, ``sigma0.258``."""
    return f"sigma{sigma:.3g}"


class CaptionerStage(StageTraining, pl.LightningModule):
    """Args:
    net: :class:`~t2i_lightning.nn.captioner.NoisyCaptioner`.
    sigma_max, sigma_min, num_levels: the score model's geometric noise levels (σ = 0 is added).
    all_captions: train on a random one of the metadata's ``captions`` (else the ``.txt`` caption).
    lr, weight_decay, warmup_steps, lr_decay: AdamW with warmup then "linear" or "cosine" decay.
    samples: a callback drawing noisy validation images with their greedy captions.
    """

    adam_betas = (0.9, 0.98)

    def __init__(
        self,
        net: nn.Module,
        sigma_max: float = 2.0,
        sigma_min: float = 0.02,
        num_levels: int = 10,
        all_captions: bool = True,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        lr_decay: str = "cosine",
        samples: pl.Callback | None = None,
    ):
        super().__init__()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(ignore=["samples"])
        self.net = net
        self.samples = samples
        levels = geometric_sigmas(sigma_max, sigma_min, num_levels).float()
        self.register_buffer("sigmas", torch.cat([levels.new_zeros(1), levels]), persistent=False)

    @property
    def eval_sigmas(self) -> list[float]:
        """σ = 0, the middle level and the highest level: where validation is reported."""
        levels = self.sigmas[1:].tolist()
        return [0.0, levels[len(levels) // 2], levels[0]]

    def captions_of(self, batch: dict[str, Any], train: bool) -> list[str]:
        if not (train and self.hparams.all_captions):
            return list(batch["caption"])
        return [random.choice(m.get("captions") or [c]) for c, m in zip(batch["caption"], batch["meta"], strict=True)]

    def _token_stats(self, images: torch.Tensor, sigma: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        """Mean token cross-entropy and accuracy over the captions' predicted positions."""
        token_ids = self.net.tokenize(captions).to(self.device)
        logits = self.net(images, sigma, token_ids)[:, :-1].float()
        targets = token_ids[:, 1:]
        mask = self.net.target_mask(token_ids)[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        count = mask.sum().clamp(min=1)
        return {"loss": (nll * mask).sum() / count, "token_acc": ((logits.argmax(-1) == targets) & mask).sum() / count}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        sigma = self.sigmas[torch.randint(0, len(self.sigmas), (x.shape[0],), device=x.device)]
        noisy = x + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(x)
        stats = self._token_stats(noisy, sigma, self.captions_of(batch, train=True))
        self.log("train/loss", stats["loss"], prog_bar=True, batch_size=len(x))
        self.log("train/token_acc", stats["token_acc"], batch_size=len(x))
        return stats["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = batch["image"]
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)
        noise = torch.randn(x.shape, generator=generator, device=x.device)  # the same noise at every validation
        captions = self.captions_of(batch, train=False)
        for sigma in self.eval_sigmas:
            level = torch.full((len(x),), sigma, device=x.device)
            noisy = x + sigma * noise
            stats = self._token_stats(noisy, level, captions)
            greedy = self.net.greedy(noisy, level)
            exact = sum(caption_is_exact(g, c, m) for g, c, m in zip(greedy, captions, batch["meta"], strict=True))
            name = level_name(sigma)
            self.log_dict(
                {f"val/loss_{name}": stats["loss"], f"val/token_acc_{name}": stats["token_acc"],
                 f"val/exact_{name}": exact / len(x)},
                batch_size=len(x), sync_dist=True,
            )  # fmt: skip
            if sigma == 0:
                self.log("val/loss", stats["loss"], prog_bar=True, batch_size=len(x), sync_dist=True)
