"""Reconstruction grids of the autoencoder during training: originals above their reconstructions.

At the end of every validation run (with the EMA weights), rank 0 reconstructs the first validation
images from their posterior means and writes the grid (each original beside its reconstruction, with
its PSNR) to TensorBoard (``samples/grid``) and ``<run dir>/samples/step-XXXXXXX.png``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from ..data.image_io import tensor_to_images
from ..data.inspect import captioned_grid
from ..metrics.superres import psnr_per_image
from .sample_grid import publish_grid


class ReconstructionGrid(pl.Callback):
    """Args:
    n_images: validation images reconstructed at each validation (the first of the first batch).
    """

    def __init__(self, n_images: int = 8):
        super().__init__()
        if n_images <= 0:
            raise ValueError(f"n_images must be positive, got {n_images}")
        self.n = n_images
        self.images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.images is None and batch_idx == 0:
            self.images = batch["image"][: self.n].detach().cpu()

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.images is None:
            return
        images = self.images.to(pl_module.device)
        reconstructions = pl_module.reconstruct(images)
        scores = psnr_per_image(reconstructions, images).tolist()
        tiles, captions = [], []
        for i, score in enumerate(scores):
            tiles += tensor_to_images(images[i : i + 1]) + tensor_to_images(reconstructions[i : i + 1])
            captions += ["original", f"{score:.1f} dB"]
        grid = captioned_grid(tiles, captions, tile=max(64, images.shape[-1]), columns=4)
        publish_grid(trainer, grid, {"val/grid_psnr": sum(scores) / len(scores)})
