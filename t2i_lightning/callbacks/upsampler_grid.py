"""Sample grids of the upsampler during training: low-res | bicubic | upsampler | ground truth.

At the end of every validation run (with the EMA weights), rank 0 upsamples the same whole
validation images (the first of the validation shards, downsampled by the stage's factor), draws
one row per image (the low-resolution input shown with nearest-neighbour pixels, bicubic
upsampling, the upsampler's sample, the ground truth), and logs PSNR, SSIM and edge sharpness of
bicubic and of the upsampler against the ground truth (:mod:`t2i_lightning.metrics.superres`) as
``val/psnr_bicubic``, ``val/psnr_upsampler`` ... The grid goes to TensorBoard (``samples/grid``)
and to ``<run dir>/samples/step-XXXXXXX.png``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..data.image_io import tensor_to_images
from ..data.inspect import captioned_grid
from ..metrics.superres import superres_scores
from ..nn.sr_unet import upsample_bicubic
from .sample_grid import publish_grid

COLUMNS = ("low-res input", "bicubic", "upsampler", "ground truth")


def comparison_rows(
    references: dict[str, Any], upsampled: torch.Tensor, factor: int
) -> dict[str, torch.Tensor]:
    """The four images of each row, as high-resolution tensors keyed by column."""
    low_res = references["low_res"]
    return {
        "low-res input": F.interpolate(low_res, scale_factor=factor, mode="nearest"),
        "bicubic": upsample_bicubic(low_res, factor).clamp(-1, 1),
        "upsampler": upsampled.cpu(),
        "ground truth": references["image"],
    }


class UpsamplerSampleGrid(pl.Callback):
    """Args:
    n_images: validation images upsampled at each validation (the first of the validation shards).
    seed: noise seed, the same at every validation so grids are comparable over training.
    The sampling settings are the stage's own (``aug_level``, ``sampler``, ``steps``).
    """

    def __init__(self, n_images: int = 4, seed: int = 0):
        super().__init__()
        if n_images <= 0:
            raise ValueError(f"n_images must be positive, got {n_images}")
        self.n, self.seed = n_images, seed
        self.references: dict[str, Any] | None = None
        self.last_report: dict[str, float] = {}

    def draw(self, trainer: pl.Trainer, pl_module) -> tuple[Any, dict[str, float]]:
        """The comparison grid and the metrics of bicubic and the upsampler against the ground truth."""
        if self.references is None:
            self.references = trainer.datamodule.reference_pairs(self.n)
        refs = self.references
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        upsampled = pl_module.sample(refs["low_res"], image_embeddings=refs.get("img_emb"), generator=generator,
                                     progress=False)  # fmt: skip
        rows = comparison_rows(refs, upsampled, pl_module.net.factor)
        report = {}
        for name in ("bicubic", "upsampler"):
            for metric, value in superres_scores(refs["image"], rows[name]).items():
                report[f"{metric}_{name}"] = value
        images, captions = [], []
        for i in range(len(upsampled)):
            for column in COLUMNS:
                images += tensor_to_images(rows[column][i : i + 1])
                captions.append(column)
        tile = refs["image"].shape[-1]
        return captioned_grid(images, captions, tile=tile, columns=len(COLUMNS)), report

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        grid, report = self.draw(trainer, pl_module)
        self.last_report = report
        publish_grid(trainer, grid, {f"val/{key}": value for key, value in report.items()})
