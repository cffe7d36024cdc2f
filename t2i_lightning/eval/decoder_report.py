"""How well the decoder reconstructs validation images from their CLIP image embeddings (the study's
reconstruction experiment), scored without any learned judge.

``t2i evaluate-decoder`` (``make evaluate-decoder``): the first ``n`` validation images' true CLIP
image embeddings are decoded at each requested guidance scale with the same seed, and each
reconstruction is compared with its source by :func:`reconstruction_scores`: the coarse colour
error against random pairs and, on shapes, whether each object comes back in its colour, in its
place, near it and anywhere (:mod:`t2i_lightning.metrics.colour`). Beside them, the same scores for the
training image whose embedding is nearest to each source's (:func:`~t2i_lightning.eval.nearest.nearest_training_images`):
a real image drawn perfectly, as far as the embedding tells it apart. The rows are printed as a
table and written as JSON (atomically), beside one grid per scale (sources above, reconstructions below).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..data.joined import ImageEmbeddingDataModule
from ..data.shapes.scene import COLOURS
from ..metrics.colour import object_colour_report, reconstruction_colour_report

if TYPE_CHECKING:
    from ..stages.diffusion import DiffusionStage


def validation_references(data: str, embeddings: str, image_size: int, n: int) -> dict:
    """The first ``n`` validation images of ``data`` with their CLIP image embeddings from ``embeddings``
    (a batch: ``image``, ``img_emb``, ``caption``, ``meta``, ...)."""
    datamodule = ImageEmbeddingDataModule(embeddings, train=None, val=data, image_size=image_size, batch_size=n,
                                          num_workers=0)  # fmt: skip
    datamodule.setup("validate")
    return next(iter(datamodule.val_dataloader()))


def reconstruction_scores(sources: torch.Tensor, reconstructions: torch.Tensor, metas: list[dict]) -> dict[str, float]:
    """The coarse colour error (``matched``, ``random_pairs``, ``ratio``) and, where the metadata lists
    objects (shapes), the object colour hits, near and presence against random pairs."""
    report = reconstruction_colour_report(sources, reconstructions)
    if any(meta.get("objects") for meta in metas):
        report |= object_colour_report(sources, reconstructions, metas, COLOURS)
    return report


def decode_in_batches(
    stage: DiffusionStage, embeddings: torch.Tensor, batch_size: int, seed: int, image_size: int, **options
) -> torch.Tensor:
    """``stage.sample`` over ``embeddings`` in batches of ``batch_size``, one generator seeded once, so the
    images depend on the seed and the batch size only."""
    generator = torch.Generator(device=stage.device).manual_seed(seed)
    parts = [
        stage.sample(chunk, image_size=image_size, generator=generator, progress=False, **options).cpu()
        for chunk in embeddings.split(batch_size)
    ]
    return torch.cat(parts)


def decoder_report(
    stage: DiffusionStage,
    references: dict,
    cfg_scales: list[float],
    sampler: str = "ddim",
    steps: int | str = 25,
    threshold: float | None = 0.995,
    seed: int = 0,
    batch_size: int = 16,
    precision: str = "32-true",
    nearest: tuple[torch.Tensor, list[str]] | None = None,
) -> tuple[dict, dict[float, torch.Tensor]]:
    """One row of :func:`reconstruction_scores` per guidance scale, and the reconstructions of each;
    ``precision``: the U-Net's while sampling (:meth:`DiffusionStage.sample`). With ``nearest``
    (each source's nearest training image by embedding and its key) their scores and keys too, as
    ``nearest_training_image``."""
    sources, embeddings = references["image"], references["img_emb"]
    metas = list(references.get("meta", [{}] * len(sources)))
    rows, drawn = [], {}
    for scale in cfg_scales:
        start = time.perf_counter()
        recon = decode_in_batches(
            stage, embeddings, batch_size, seed, sources.shape[-1], sampler=sampler, steps=steps, cfg_scale=scale,
            threshold=threshold, precision=precision,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        drawn[scale] = recon
        rows.append({"cfg": scale, **reconstruction_scores(sources, recon, metas), "s_per_image": seconds / len(recon)})
    report = {"images": len(sources), "size": sources.shape[-1], "sampler": sampler, "steps": steps,
              "threshold": threshold, "seed": seed, "batch_size": batch_size, "precision": precision, "rows": rows}  # fmt: skip
    if nearest is not None:
        report["nearest_training_image"] = {**reconstruction_scores(sources, nearest[0], metas), "keys": nearest[1]}
    return report, drawn


def format_report(report: dict) -> str:
    """The rows as a text table; object columns only when the images came with object metadata."""
    objects = "object_colour_hits" in report["rows"][0]
    lines = [
        f"{report['images']} validation reconstructions of {report['size']}px from {report.get('data', '?')}, "
        f"{report['sampler']}-{report['steps']}, seed {report['seed']}, U-Net {report.get('precision', '32-true')}"
        + (f", {int(report['rows'][0]['objects'])} objects" if objects else ""),
        f"{'cfg':>5} {'colour err':>10} {'random':>7} {'ratio':>6}"
        + (f" {'hits':>6} {'random':>7} {'near':>6} {'random':>7} {'present':>8} {'random':>7}" if objects else "")
        + f" {'s/image':>8}",
    ]
    for row in report["rows"]:
        lines.append(_format_row(f"{row['cfg']:>5g}", row, objects) + f" {row['s_per_image']:>8.2f}")
    if "nearest_training_image" in report:
        lines.append(_format_row(f"{'NN':>5}", report["nearest_training_image"], objects)
                     + "   (nearest training image by embedding)")  # fmt: skip
    return "\n".join(lines)


def _format_row(label: str, row: dict, objects: bool) -> str:
    line = f"{label} {row['matched']:>10.1f} {row['random_pairs']:>7.1f} {row['ratio']:>6.3f}"
    if objects:
        line += (
            f" {row['object_colour_hits']:>6.3f} {row['object_colour_hits_random_pairs']:>7.3f}"
            f" {row['object_colour_near']:>6.3f} {row['object_colour_near_random_pairs']:>7.3f}"
            f" {row['object_colour_present']:>8.3f} {row['object_colour_present_random_pairs']:>7.3f}"
        )
    return line
