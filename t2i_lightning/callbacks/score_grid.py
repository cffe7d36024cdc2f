"""Sample grids of the score model during training: unconditional annealed Langevin samples.

At the end of every validation run (with the EMA weights), rank 0 draws ``n`` samples from the same
starting noise, so grids are comparable over training, to TensorBoard (``samples/grid``) and
``<run dir>/samples/step-XXXXXXX.png``. Captioner-guided samples come from ``t2i sample --method
score`` (``make sample-score``), once a captioner is trained.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from ..data.image_io import tensor_to_images
from ..data.inspect import captioned_grid
from .sample_grid import publish_grid


class ScoreSampleGrid(pl.Callback):
    """Args:
    n: samples per grid.
    steps_per_level, eps: Langevin settings for the grid (default: the stage's).
    seed: noise seed, the same at every validation.
    """

    def __init__(self, n: int = 8, steps_per_level: int | None = None, eps: float | None = None, seed: int = 0):
        super().__init__()
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        self.n, self.steps_per_level, self.eps, self.seed = n, steps_per_level, eps, seed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        images = pl_module.sample(self.n, steps_per_level=self.steps_per_level, eps=self.eps, generator=generator,
                                  progress=False)  # fmt: skip
        grid = captioned_grid(tensor_to_images(images), ["unconditional"] * self.n, tile=96, columns=self.n)
        publish_grid(trainer, grid, {})
