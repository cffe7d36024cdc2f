"""``t2i evaluate-decoder``: the decoder's reconstructions of validation images from their CLIP image
embeddings, scored against their sources (:mod:`t2i_lightning.eval.decoder_report`).

    t2i evaluate-decoder [--decoder CKPT] [--n 64] [--cfg 1 3 6] [--steps 25] [--seed 0] [--no-nearest]

By default the images and embeddings are the ones the decoder was trained on (the embedding
directory of the ``stats.json`` its checkpoint recorded, and the dataset that holds it). Writes the
table as JSON beside the checkpoint's run (``<run>/reconstructions.json``) and one grid per guidance
scale (``<run>/reconstructions-cfgS.png``: sources on top, reconstructions below). Unless
``--no-nearest``, also the row of each source's nearest training image by CLIP image embedding (what
the embedding tells apart, drawn perfectly) and its grid (``<run>/reconstructions-nearest.png``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import default_checkpoint
from .options import add_cfg_argument, add_command, add_device_arguments, add_sampler_argument, options_from
from .sample import check_steps_and_threshold

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class DecoderReportOptions:
    decoder: str
    embeddings: str | None
    data: str | None
    n: int
    cfg: list[float]
    sampler: str
    steps: str
    threshold: float
    device: torch.device
    precision: str
    seed: int
    batch_size: int
    out: str | None
    no_nearest: bool


def register(subparsers: argparse._SubParsersAction) -> None:
    report = add_command(subparsers, "evaluate-decoder", __doc__, help="colour and object scores of the decoder's reconstructions of validation images, per guidance scale")
    report.add_argument("--decoder", default=default_checkpoint("decoder"), help="decoder checkpoint (default: %(default)s)")
    report.add_argument(
        "--embeddings", default=None,
        help="embedding directory mirroring --data (default: the one the decoder was trained with)",
    )  # fmt: skip
    report.add_argument("--data", default=None, help="dataset with val shards (default: the one holding --embeddings)")
    report.add_argument("--n", type=int, default=64, help="validation images (default: 64)")
    add_cfg_argument(report, sweep=True)
    add_sampler_argument(report)
    report.add_argument("--steps", default="25", help="sampling steps, or 'all' (default: 25, as the training grids)")
    report.add_argument(
        "--threshold", type=float, default=0.995,
        help="dynamic-thresholding percentile; 0 for static clipping (default: 0.995)",
    )  # fmt: skip
    add_device_arguments(report)
    report.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    report.add_argument("--batch-size", type=int, default=16, help="images decoded at once (default: 16)")
    report.add_argument("--out", default=None, help="JSON report (default: <run>/reconstructions.json)")
    report.add_argument(
        "--no-nearest", action="store_true",
        help="leave out the reference row of each source's nearest training image by embedding (it reads the train split)",
    )  # fmt: skip
    report.set_defaults(run=lambda args: run(options_from(DecoderReportOptions, args)))


def default_report_path(checkpoint: str) -> Path:
    """``<run>/reconstructions.json`` for ``<run>/checkpoints/X.ckpt``, else ``X.reconstructions.json``."""
    path = Path(checkpoint)
    if path.parent.name == "checkpoints":
        return path.parent.parent / "reconstructions.json"
    return path.with_suffix(".reconstructions.json")


def nearest_reference(embeddings: str, references: dict, image_size: int) -> tuple[torch.Tensor, list[str]] | None:
    """Each source's nearest training image and its key (:func:`nearest_training_images`), or None,
    said on stdout, when ``embeddings`` has no train split."""
    from ..eval.nearest import has_train_split, nearest_training_images

    if not has_train_split(embeddings):
        print(f"No train split in {embeddings}: the nearest-training-image row is left out")
        return None
    return nearest_training_images(embeddings, references["img_emb"], image_size)


def run(options: DecoderReportOptions) -> None:
    from ..data.image_io import save_png_atomic, tensor_to_images
    from ..data.inspect import captioned_grid
    from ..data.shards import check_writable, write_json_atomic
    from ..eval.decoder_report import decoder_report, format_report, validation_references
    from ..pipeline import load_decoder

    if options.n < 2:
        raise ValueError(f"--n must be at least 2 (the baseline pairs each image with another), got {options.n}")
    if options.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {options.batch_size}")
    check_steps_and_threshold(options)
    out = Path(options.out) if options.out else default_report_path(options.decoder)
    check_writable(out)
    stage = load_decoder(options.decoder, options.device)
    if stage.conditions_on_text:
        raise ValueError(f"{options.decoder} is a text-conditioned decoder: it has no image embeddings to reconstruct from")
    stats = stage.conditioning.stats_path
    embeddings = options.embeddings or (str(Path(stats).parent) if stats else None)
    if embeddings is None:
        raise ValueError(f"{options.decoder} recorded no embedding directory: pass --embeddings (and --data)")
    data = options.data or str(Path(embeddings).parent)
    references = validation_references(data, embeddings, stage.image_size, options.n)
    if len(references["image"]) < options.n:
        print(f"Only {len(references['image'])} validation images in {data} (asked for {options.n})")
    nearest = None if options.no_nearest else nearest_reference(embeddings, references, stage.image_size)
    steps = options.steps if options.steps == "all" else int(options.steps)
    report, drawn = decoder_report(
        stage, references, options.cfg, sampler=options.sampler, steps=steps, threshold=options.threshold or None,
        seed=options.seed, batch_size=options.batch_size, precision=options.precision,
        nearest=nearest,
    )  # fmt: skip
    report |= {"decoder": options.decoder, "data": data, "embeddings": embeddings}
    sources = tensor_to_images(references["image"])
    columns = min(len(sources), 16)
    grids = {f"cfg{scale:g}": (images, f"cfg {scale:g}") for scale, images in drawn.items()}
    if nearest is not None:
        grids["nearest"] = (nearest[0], "nearest train")
    for name, (images, label) in grids.items():
        grid = captioned_grid(sources[:columns] + tensor_to_images(images[:columns]),
                              list(references["caption"][:columns]) + [label] * columns, tile=96,
                              columns=columns)  # fmt: skip
        save_png_atomic(grid, out.with_name(f"{out.stem}-{name}.png"))
    write_json_atomic(out, report)
    print(format_report(report))
    print(f"-> {out} (grids of the first {columns} beside it)")
