"""``t2i evaluate``: draw every variant for the same reference captions and score it (the ablation table).

For each variant and seed the images are drawn once on the evaluation's device and cached under
``<out>/cache/`` (atomically, with a fingerprint of the settings and checkpoints: a re-run reuses them
unless ``force``), then scored against the reference set:

- in the judge's feature space (shapes only): Fréchet distance (Heusel et al. 2017), KID (Bińkowski et
  al. 2018), precision and recall (Kynkäänniemi et al. 2019, k = 3), and exact alignment of the judge's
  readings with the captions (:mod:`t2i_lightning.metrics.alignment`). Without a judge (``--judge none``,
  or reference metadata that are not shapes scenes: real photos) these columns are absent;
- in a CLIP's image-embedding space: the same distances and the CLIP score with the caption;
- in Inception-v3's pool3 space, when its weights are present locally: FID, KID, precision and recall
  by the same distance code, and IS (:mod:`t2i_lightning.eval.inception`); else the cells say so;
- PSNR/SSIM against the reference image where a row corresponds to it one to one;
- seconds per image.

The reference set's features in each space are cached under ``<out>/reference-cache/`` by what they
were computed from (:mod:`t2i_lightning.eval.feature_cache`). Distances are mean ± std over the seeds;
the judge-space Fréchet distance is also given at several set sizes (seed 0) to show its small-sample
bias. The judge's own per-attribute accuracy on the reference images goes in the table's header: it
is the instrument's credibility.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.image_io import grid_image, save_png_atomic, tensor_to_images
from ..data.shards import atomic_path, write_json_atomic
from ..metrics.alignment import alignment_report
from ..metrics.distances import feature_distances
from ..metrics.superres import superres_scores
from ..nn.judge import SceneJudge
from .clip_space import ClipInstrument
from .feature_cache import CACHE_DIR, cached_features
from .inception import InceptionInstrument
from .judging import judge_images
from .reference import ReferenceSet, images_at_size
from .table import format_table
from .variants import EvalModels, SamplingOptions, Variant
from .variants import variant as named_variant

DISTANCE_KEYS = ("fd", "kid", "precision", "recall")


@dataclass
class EvaluationSettings:
    n: int
    seeds: list[int]
    variants: list[str]
    subset_sizes: list[int]
    options: SamplingOptions = field(default_factory=SamplingOptions)


@dataclass
class Instruments:
    judge: SceneJudge | None  # None: no judge-space columns, no exact alignment
    clip: ClipInstrument
    inception: InceptionInstrument
    identity: dict[str, dict]  # per feature space, what its instrument is (feature_cache.weights_identity)

    def extractors(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Image features per feature space this table measures in."""
        spaces = {"clip": self.clip.image_features}
        if self.judge is not None:
            spaces = {"judge": lambda images: judge_images(self.judge, images)[1], **spaces}
        if self.inception.available:
            spaces["inception"] = self.inception.features
        return spaces


def _fingerprint(variant: Variant, settings: EvaluationSettings, models: EvalModels, seed: int) -> str:
    paths = {k: models.paths.get(k) for k in variant.needs}
    stamps = {k: (os.path.getsize(p), os.path.getmtime(p)) for k, p in paths.items() if p and os.path.isfile(p)}
    options = asdict(settings.options)
    if options["precision"] == "32-true":  # recorded only when changed, so caches drawn before the option still match
        del options["precision"]
    elif "upsampler" in variant.needs:  # its U-Net samples at the precision too, which older caches' did not
        options["upsampler_precision"] = options["precision"]
    record = {"variant": variant.name, "n": settings.n, "seed": seed, "options": options,
              "paths": paths, "stamps": stamps}  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def drawn_images(
    variant: Variant, models: EvalModels, ref: ReferenceSet, real: ReferenceSet,
    settings: EvaluationSettings, seed: int, cache: Path, force: bool,
) -> tuple[torch.Tensor, float, bool]:  # fmt: skip
    """The variant's images for ``seed`` (from the cache when its fingerprint matches), seconds per image
    when drawn, and whether they came from the cache."""
    path = cache / f"{variant.name}-seed{seed}.pt"
    fingerprint = _fingerprint(variant, settings, models, seed)
    if path.is_file() and not force:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("fingerprint") == fingerprint:
            return stored["images"].float() / 127.5 - 1, float(stored["s_per_image"]), True
    generator = torch.Generator(device=models.device).manual_seed(seed)
    start = time.perf_counter()
    images = variant.draw(models, ref, real, settings.options, generator).detach().cpu()
    seconds = (time.perf_counter() - start) / len(images)
    quantised = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    with atomic_path(path) as tmp:
        torch.save({"images": quantised, "s_per_image": seconds, "fingerprint": fingerprint}, tmp)
    return quantised.float() / 127.5 - 1, seconds, False


def score_images(
    images: torch.Tensor, ref: ReferenceSet, captions: list[str], reference_features: dict[str, torch.Tensor],
    instruments: Instruments, ground_truth: bool,
) -> dict[str, float | dict]:  # fmt: skip
    """Every metric of one drawn set: distances against the reference set, CLIP score and (with a judge)
    alignment against ``captions`` (what the images should show), PSNR/SSIM against the reference images
    when they are the ``ground_truth``."""
    result: dict[str, float | dict] = {}
    if instruments.judge is not None:
        scenes, judge_features = judge_images(instruments.judge, images)
        for key, value in feature_distances(reference_features["judge"], judge_features).items():
            result[f"judge_{key}"] = value
    clip_features = instruments.clip.image_features(images)
    for key, value in feature_distances(reference_features["clip"], clip_features).items():
        result[f"clip_{key}"] = value
    result["clip_score"] = instruments.clip.clip_score(images, captions, clip_features).mean().item()
    result.update(instruments.inception.scores(images, reference_features.get("inception")))
    if instruments.judge is not None:
        alignment = alignment_report(captions, scenes)
        result.update({f"align_{k}": v for k, v in alignment.items() if k != "n" and v is not None})
    if ground_truth:
        scores = superres_scores(images_at_size(ref.images, images.shape[-2:]), images)
        result.update({"psnr": scores["psnr"], "ssim": scores["ssim"]})
    return result


def reference_features(ref: ReferenceSet, instruments: Instruments, cache: Path) -> dict[str, torch.Tensor]:
    """The reference images' features in every space the instruments measure, from ``cache`` where it has
    them for this reference set and instrument (:func:`cached_features`)."""
    features, read = {}, []
    for space, extract in instruments.extractors().items():
        features[space], cached = cached_features(cache, space, ref, instruments.identity[space], extract)
        read.append(f"{space} {'cached' if cached else 'computed'}")
    print(f"reference features ({len(ref)} images): {', '.join(read)}")
    return features


SUMMARY = (("judge FD", "judge_fd"), ("alignment", "align_all"), ("CLIP FD", "clip_fd"), ("FID", "fid"))


def _summary(metrics: dict) -> str:
    """The headline numbers of one scored set, those it has."""
    return ", ".join(f"{name} {metrics[key]:.3g}" for name, key in SUMMARY if key in metrics)


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def evaluate(
    settings: EvaluationSettings, models: EvalModels, ref: ReferenceSet, real: ReferenceSet,
    instruments: Instruments, out: str | os.PathLike, force: bool = False, header: dict | None = None,
) -> dict:  # fmt: skip
    """Draw and score every variant; write ``table.md``, ``table.json`` and a grid per variant under ``out``."""
    out = Path(out)
    features = reference_features(ref, instruments, out / CACHE_DIR)
    rows = []
    for name in settings.variants:
        row_variant = named_variant(name)
        reason = models.missing(row_variant.needs)
        if reason:
            rows.append({"variant": name, "skipped": reason})
            print(f"{name}: skipped ({reason})")
            continue
        per_seed, seconds, first_images = [], [], None
        captions = row_variant.captions(ref, real)
        for seed in settings.seeds if row_variant.seeded else settings.seeds[:1]:
            images, s_per_image, cached = drawn_images(row_variant, models, ref, real, settings, seed, out / "cache", force)
            first_images = images if first_images is None else first_images
            per_seed.append(score_images(images, ref, captions, features, instruments, row_variant.ground_truth))
            seconds.append(s_per_image)
            print(f"{name} seed {seed}: {'cached' if cached else f'{s_per_image:.2f} s/image'}, {_summary(per_seed[-1])}")
        metrics = {key: _mean_std([m[key] for m in per_seed]) for key in per_seed[0]}
        metrics["s_per_image"] = _mean_std(seconds)
        grid = grid_image(tensor_to_images(first_images[:16]), columns=8)
        save_png_atomic(grid, out / "grids" / f"{name}.png")
        row = {"variant": name, "seeds": len(per_seed), "metrics": metrics, "grid": str(out / "grids" / f"{name}.png")}
        if instruments.judge is not None:
            row["judge_fd_at_n"] = judge_fd_at_n(instruments.judge, features["judge"], first_images, settings.subset_sizes)
        rows.append(row)
    table = {"header": header or {}, "settings": {**asdict(settings), "options": asdict(settings.options)}, "rows": rows}
    write_json_atomic(out / "table.json", table)
    markdown = format_table(table)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown)
    log_to_tensorboard(table, markdown, out)
    return table


def judge_fd_at_n(judge: SceneJudge, reference: torch.Tensor, images: torch.Tensor, sizes: list[int]) -> dict[str, float]:
    """The judge-space Fréchet distance of the first N images to the first N reference features, at each
    N in ``sizes`` that the sets allow (its small-sample bias)."""
    features = judge_images(judge, images)[1]
    return {str(size): feature_distances(reference[:size], features[:size])["fd"]
            for size in sizes if 3 < size <= min(len(reference), len(features))}  # fmt: skip


def log_to_tensorboard(table: dict, markdown: str, out: Path) -> None:
    """The table's numbers as scalars (``<metric>/<variant>``, so a metric's rows share a chart), its
    grids as images and the Markdown as text, in ``out`` (``make tensorboard`` serves it)."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out)) as writer:
        for row in table["rows"]:
            if "skipped" in row:
                continue
            for metric, value in row["metrics"].items():
                writer.add_scalar(f"{metric}/{row['variant']}", value["mean"], 0)
            grid = np.asarray(Image.open(row["grid"]).convert("RGB"))
            writer.add_image(f"grids/{row['variant']}", grid, 0, dataformats="HWC")
        writer.add_text("table", markdown, 0)
