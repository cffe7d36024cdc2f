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
from pathlib import Path
from typing import TYPE_CHECKING

from .data.image_io import save_png_atomic, tensor_to_images
from .data.inspect import captioned_grid
from .data.shards import check_writable, write_json_atomic
from .pipeline import DEFAULT_DECODER, load_decoder
from .precision_option import add_precision_argument
from .sample_command import check_steps_and_threshold

if TYPE_CHECKING:
    import torch


def add_evaluate_decoder_parser(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "evaluate-decoder",
        help="colour and object scores of the decoder's reconstructions of validation images, per guidance scale",
        description=__doc__.split("\n\n")[0],
    )
    report.add_argument("--decoder", default=DEFAULT_DECODER, help=f"decoder checkpoint (default: {DEFAULT_DECODER})")
    report.add_argument(
        "--embeddings", default=None,
        help="embedding directory mirroring --data (default: the one the decoder was trained with)",
    )  # fmt: skip
    report.add_argument("--data", default=None, help="dataset with val shards (default: the one holding --embeddings)")
    report.add_argument("--n", type=int, default=64, help="validation images (default: 64)")
    report.add_argument("--cfg", type=float, nargs="+", default=[3.0], help="guidance scales to sweep (default: 3)")
    report.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="default: ddim")
    report.add_argument("--steps", default="25", help="sampling steps, or 'all' (default: 25, as the training grids)")
    report.add_argument(
        "--threshold", type=float, default=0.995,
        help="dynamic-thresholding percentile; 0 for static clipping (default: 0.995)",
    )  # fmt: skip
    add_precision_argument(report)
    report.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    report.add_argument("--batch-size", type=int, default=16, help="images decoded at once (default: 16)")
    report.add_argument("--out", default=None, help="JSON report (default: <run>/reconstructions.json)")
    report.add_argument(
        "--no-nearest", action="store_true",
        help="leave out the reference row of each source's nearest training image by embedding (it reads the train split)",
    )  # fmt: skip


def default_report_path(checkpoint: str) -> Path:
    """``<run>/reconstructions.json`` for ``<run>/checkpoints/X.ckpt``, else ``X.reconstructions.json``."""
    path = Path(checkpoint)
    if path.parent.name == "checkpoints":
        return path.parent.parent / "reconstructions.json"
    return path.with_suffix(".reconstructions.json")


def nearest_reference(embeddings: str, references: dict, image_size: int) -> tuple[torch.Tensor, list[str]] | None:
    """Each source's nearest training image and its key (:func:`nearest_training_images`), or None,
    said on stdout, when ``embeddings`` has no train split."""
    from .eval.nearest import has_train_split, nearest_training_images

    if not has_train_split(embeddings):
        print(f"No train split in {embeddings}: the nearest-training-image row is left out")
        return None
    return nearest_training_images(embeddings, references["img_emb"], image_size)


def run_evaluate_decoder(args: argparse.Namespace) -> None:
    from .eval.decoder_report import decoder_report, format_report, validation_references

    if args.n < 2:
        raise ValueError(f"--n must be at least 2 (the baseline pairs each image with another), got {args.n}")
    if args.batch_size <= 0 or any(scale < 0 for scale in args.cfg):
        raise ValueError("--batch-size must be positive and --cfg scales >= 0")
    check_steps_and_threshold(args)
    out = Path(args.out) if args.out else default_report_path(args.decoder)
    check_writable(out)
    stage = load_decoder(args.decoder)
    if getattr(stage, "conditions_on_text", False):
        raise ValueError(f"{args.decoder} is a text-conditioned decoder: it has no image embeddings to reconstruct from")
    embeddings = args.embeddings or (str(Path(stage.hparams.stats).parent) if stage.hparams.get("stats") else None)
    if embeddings is None:
        raise ValueError(f"{args.decoder} recorded no embedding directory: pass --embeddings (and --data)")
    data = args.data or str(Path(embeddings).parent)
    references = validation_references(data, embeddings, stage.net.image_size, args.n)
    if len(references["image"]) < args.n:
        print(f"Only {len(references['image'])} validation images in {data} (asked for {args.n})")
    nearest = None if args.no_nearest else nearest_reference(embeddings, references, stage.net.image_size)
    steps = args.steps if args.steps == "all" else int(args.steps)
    report, drawn = decoder_report(
        stage, references, args.cfg, sampler=args.sampler, steps=steps, threshold=args.threshold or None,
        seed=args.seed, batch_size=args.batch_size, precision=args.precision,
        nearest=nearest,
    )  # fmt: skip
    report |= {"decoder": args.decoder, "data": data, "embeddings": embeddings}
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
