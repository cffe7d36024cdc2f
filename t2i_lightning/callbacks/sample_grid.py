"""Sample grids of the decoder during training: reconstructions and prompts, to TensorBoard and PNG.

At the end of every validation run (with the EMA weights, which the EMA callback swaps in for
validation), rank 0 draws:
- reconstructions: the first validation images' CLIP image embeddings decoded, beside the
  originals (the study's reconstruction experiment), with their coarse colour error against a
  random-pair baseline (:mod:`t2i_lightning.metrics.colour`);
- prompts: fixed captions through CLIP and the translator, when a translator checkpoint exists;
  a text-conditioned stage (``conditions_on_text``, the Imagen-like decoder) takes the captions
  themselves, and its batches carry no image embeddings, so its grid is the prompt row only.

The grid goes to TensorBoard (``samples/grid``) and to ``<run dir>/samples/step-XXXXXXX.png``.
The translator and CLIP are frozen helpers held by this callback, never submodules of the stage.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image

from ..data.image_io import save_png_atomic, tensor_to_images
from ..data.inspect import captioned_grid
from ..diffusion import DEFAULT_CFG_SCALE
from ..eval.decoder_report import reconstruction_scores
from ..registry import default_checkpoint

DEFAULT_PROMPTS = (
    "a red circle",
    "a blue square on a yellow background",
    "two green triangles",
    "a small purple star to the left of a large orange ring",
)


class DecoderSampleGrid(pl.Callback):
    """Args:
    n_reconstructions: validation images to reconstruct (the first of the first batch).
    prompts: captions drawn through the translator (skipped without a translator checkpoint), or
        given straight to a text-conditioned stage.
    translator: translator checkpoint (its CLIP is found from what it recorded); not used for a
        text-conditioned stage.
    sampler, steps, cfg_scale, threshold: as in :meth:`DiffusionStage.sample`.
    seed: noise seed, the same at every validation so grids are comparable over training.
    """

    def __init__(
        self,
        n_reconstructions: int = 8,
        prompts: list[str] | None = None,
        translator: str | None = default_checkpoint("translator"),
        sampler: str = "ddim",
        steps: int = 25,
        cfg_scale: float = DEFAULT_CFG_SCALE,
        threshold: float | None = 0.995,
        seed: int = 0,
    ):
        super().__init__()
        self.n = n_reconstructions
        self.prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
        self.translator_path = translator
        self.options = dict(sampler=sampler, steps=steps, cfg_scale=cfg_scale, threshold=threshold)
        self.seed = seed
        self.references: dict[str, Any] | None = None
        self._chain = None
        self.last_report: dict[str, float] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.references is None and batch_idx == 0 and "img_emb" in batch:
            self.references = {
                "image": batch["image"][: self.n].cpu(),
                "img_emb": batch["img_emb"][: self.n].cpu(),
                "caption": list(batch["caption"][: self.n]),
                "meta": list(batch.get("meta", [{}] * len(batch["caption"]))[: self.n]),
            }

    def _prompt_conditioning(self, pl_module) -> torch.Tensor | list[str] | None:
        """What the stage's ``sample`` takes for the prompts: the captions, or their translated embeddings."""
        if getattr(pl_module, "conditions_on_text", False):
            return self.prompts or None
        return self._prompt_embeddings()

    def _prompt_embeddings(self) -> torch.Tensor | None:
        if not self.prompts or not self.translator_path or not os.path.isfile(self.translator_path):
            return None
        if self._chain is None:
            from ..pipeline import TextToImageEmbedding

            try:
                self._chain = TextToImageEmbedding.from_checkpoints(self.translator_path)
            except (FileNotFoundError, ValueError) as error:
                warnings.warn(f"Prompt samples skipped: {error}", stacklevel=2)
                self.prompts = []
                return None
        return self._chain(self.prompts)

    def draw(self, pl_module) -> tuple[Any, dict[str, float]]:
        """The captioned grid image and the reconstruction colour report."""
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        images, captions, report = [], [], {}
        if self.references is not None:
            source = self.references["image"]
            recon = pl_module.sample(
                self.references["img_emb"], image_size=source.shape[-1], generator=generator, progress=False,
                **self.options,
            ).cpu()  # fmt: skip
            report = reconstruction_scores(source, recon, self.references["meta"])
            images += tensor_to_images(source) + tensor_to_images(recon)
            captions += self.references["caption"] + ["reconstruction"] * len(recon)
        prompt_conditioning = self._prompt_conditioning(pl_module)
        if prompt_conditioning is not None:
            drawn = pl_module.sample(prompt_conditioning, generator=generator, progress=False, **self.options)
            images += tensor_to_images(drawn)
            captions += self.prompts
        if not images:
            return None, report
        columns = max(self.n if self.references is not None else 0, len(self.prompts), 1)
        return captioned_grid(images, captions, tile=96, columns=columns), report

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        grid, report = self.draw(pl_module)
        self.last_report = report
        if grid is not None:
            colour_error = {"matched": "colour_error", "random_pairs": "colour_error_random_pairs", "ratio": "colour_error_ratio"}
            metrics = {f"val/recon_{colour_error.get(key, key)}": value for key, value in report.items()}
            publish_grid(trainer, grid, metrics)


def publish_grid(trainer: pl.Trainer, grid: Image.Image, metrics: dict[str, float]) -> None:
    """Write a sample grid to ``<run dir>/samples/step-XXXXXXX.png`` and to TensorBoard (``samples/grid``),
    and log ``metrics`` at the same step."""
    step = trainer.global_step
    save_png_atomic(grid, Path(trainer.log_dir or trainer.default_root_dir) / "samples" / f"step-{step:07d}.png")
    for logger in trainer.loggers:
        if metrics:
            logger.log_metrics(metrics, step=step)
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image("samples/grid", np.asarray(grid), step, dataformats="HWC")
