"""Caption grids of the noise-conditioned captioner during training: noisy images with their greedy captions.

At the end of every validation run, rank 0 takes the first ``n`` validation images of the first
batch, adds the same noise at σ = 0, the middle level and σ_1 (the stage's ``eval_sigmas``), and
draws each noisy image above its greedy caption, one row per level, to TensorBoard
(``samples/grid``) and ``<run dir>/samples/step-XXXXXXX.png``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from ..data.image_io import tensor_to_images
from ..data.inspect import captioned_grid
from ..stages.captioner import level_name
from .sample_grid import publish_grid


class CaptionSampleGrid(pl.Callback):
    """Args:
    n: validation images per row.
    seed: noise seed, the same at every validation.
    """

    def __init__(self, n: int = 6, seed: int = 0):
        super().__init__()
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        self.n, self.seed = n, seed
        self.references: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch: dict[str, Any], batch_idx, dataloader_idx=0):
        if self.references is None and batch_idx == 0:
            self.references = batch["image"][: self.n].detach()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.references is None:
            return
        x = self.references.to(pl_module.device)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed)).to(x.device)
        images, captions = [], []
        for sigma in pl_module.eval_sigmas:
            noisy = (x + sigma * noise).clamp(-1, 1)
            greedy = pl_module.net.greedy(x + sigma * noise, torch.full((len(x),), sigma, device=x.device))
            images += tensor_to_images(noisy)
            captions += [f"[{level_name(sigma)}] {caption}" for caption in greedy]
        publish_grid(trainer, captioned_grid(images, captions, tile=96, columns=len(x)), {})
