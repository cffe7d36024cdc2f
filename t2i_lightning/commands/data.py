"""``t2i data shapes|coco|folder|inspect``: make, import and inspect WebDataset shards.

    t2i data shapes --out data/shapes --train 20000 --workers 2
    t2i data coco --images val2017/ --captions captions_val2017.json --out data/coco
    t2i data folder --images photos/ --captions captions.csv --out data/photos
    t2i data inspect data/shapes --out grid.png
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..data.shapes.defaults import POSITION_PROB
from .options import options_from


@dataclass(frozen=True, kw_only=True)
class ShapesOptions:
    out: str
    train: int
    val: int
    test: int
    size: int
    seed: int
    workers: int
    position_prob: float
    format: str
    samples_per_shard: int
    overwrite: bool


@dataclass(frozen=True, kw_only=True)
class ImportOptions:
    """``t2i data coco`` and ``t2i data folder``."""

    kind: str
    images: str
    captions: str | None
    split: str | None
    out: str
    size: int
    resize: str
    format: str
    part: tuple[float, float]
    workers: int


@dataclass(frozen=True, kw_only=True)
class InspectOptions:
    path: str
    out: str | None
    n: int


def fraction_range(text: str) -> tuple[float, float]:
    """An argparse type: ``A:B`` with 0 <= A < B <= 1."""
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give A:B with two fractions, e.g. 0:0.8; got {text!r}") from None
    if not 0 <= start < end <= 1:
        raise argparse.ArgumentTypeError(f"needs 0 <= A < B <= 1, got {text!r}")
    return start, end


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="make, import and inspect WebDataset shards")
    kinds = data.add_subparsers(dest="data_command", metavar="{shapes,coco,folder,inspect}", required=True)

    shapes = kinds.add_parser(
        "shapes",
        help="generate the embedded shapes dataset",
        description="Render shapes scenes with exact captions into WebDataset shards (deterministic, resumable).",
    )
    shapes.add_argument("--out", default="data/shapes", help="output directory (default: data/shapes)")
    shapes.add_argument("--train", type=int, default=20000, help="training samples (default: 20000)")
    shapes.add_argument("--val", type=int, default=1000, help="validation samples (default: 1000)")
    shapes.add_argument("--test", type=int, default=1000, help="test samples (default: 1000)")
    shapes.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    shapes.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    shapes.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    shapes.add_argument(
        "--position-prob", type=float, default=POSITION_PROB,
        help=f"chance that a caption names a single object's position (default: {POSITION_PROB})",
    )  # fmt: skip
    shapes.add_argument(
        "--format", choices=("png", "jpg"), default="png", help="image encoding (default: png)"
    )
    shapes.add_argument(
        "--samples-per-shard", type=int, default=1000, help="samples per shard (default: 1000)"
    )
    shapes.add_argument(
        "--overwrite", action="store_true", help="replace a dataset made with other arguments"
    )
    shapes.set_defaults(run=lambda args: run_shapes(options_from(ShapesOptions, args)))

    def add_import_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, help="output directory for the shards")
        parser.add_argument("--size", type=int, default=256, help="output image side (default: 256)")
        parser.add_argument(
            "--resize",
            choices=("border", "center-crop"),
            default="border",
            help="border: pad to a square with white, then resize (default); center-crop: crop the centre",
        )
        parser.add_argument(
            "--format", choices=("png", "jpg"), default="png", help="image encoding (default: png)"
        )
        parser.add_argument(
            "--part", type=fraction_range, default=(0.0, 1.0), metavar="A:B",
            help="import only the images from fraction A to B of the importer's order (COCO: by image id; a folder: "
            "by path), e.g. --split train --part 0:0.8 then --split val --part 0.8:1 (default: 0:1, all)",
        )  # fmt: skip
        parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
        parser.set_defaults(run=lambda args: run_import(options_from(ImportOptions, args)))

    coco = kinds.add_parser(
        "coco", help="import COCO captions", description="Import COCO images and captions."
    )
    coco.add_argument("--images", required=True, help="directory of COCO images (e.g. val2017/)")
    coco.add_argument("--captions", required=True, help="COCO captions JSON (e.g. captions_val2017.json)")
    coco.add_argument("--split", default=None, help="split name (default: from the captions file name)")
    add_import_options(coco)
    coco.set_defaults(kind="coco")

    folder = kinds.add_parser(
        "folder",
        help="import a folder of images with captions",
        description="Import images with captions from sidecar .txt files or a .csv/.jsonl table of file,caption.",
    )
    folder.add_argument("--images", required=True, help="directory of images (searched recursively)")
    folder.add_argument(
        "--captions", default=None, help="file,caption table (.csv or .jsonl); default: sidecar .txt"
    )
    folder.add_argument("--split", default="train", help="split name (default: train)")
    add_import_options(folder)
    folder.set_defaults(kind="folder")

    inspect = kinds.add_parser("inspect", help="counts, captions and a grid of a shard dataset")
    inspect.add_argument("path", help="dataset directory, .tar file, glob or brace pattern")
    inspect.add_argument("--out", default=None, help="write a grid of images with captions to this PNG")
    inspect.add_argument("--n", type=int, default=16, help="images in the grid (default: 16)")
    inspect.set_defaults(run=lambda args: run_inspect(options_from(InspectOptions, args)))


def run_shapes(options: ShapesOptions) -> None:
    from ..data.shapes.generate import ShapesConfig, generate_shapes
    from ..data.shards import check_writable

    check_writable(options.out, directory=True)
    config = ShapesConfig(options.seed, options.size, options.format, options.samples_per_shard, options.position_prob)
    index = generate_shapes(
        options.out,
        {"train": options.train, "val": options.val, "test": options.test},
        config,
        options.workers,
        options.overwrite,
    )
    counts = ", ".join(f"{split} {entry['count']}" for split, entry in index["splits"].items())
    print(f"shapes dataset in {options.out}: {counts}")


def run_import(options: ImportOptions) -> None:
    from ..data import importers
    from ..data.shards import check_writable

    check_writable(options.out, directory=True)
    settings = dict(size=options.size, resize=options.resize, image_format=options.format, part=options.part,
                    workers=options.workers)  # fmt: skip
    if options.kind == "coco":
        report = importers.import_coco(options.images, options.captions, options.out, split=options.split, **settings)
    else:
        report = importers.import_folder(
            options.images, options.out, captions=options.captions, split=options.split, **settings
        )
    print(report.summary())


def run_inspect(options: InspectOptions) -> None:
    from ..data.inspect import inspect_dataset
    from ..data.shards import check_writable

    if options.n <= 0:
        raise ValueError(f"--n must be positive, got {options.n}")
    if options.out:
        check_writable(options.out)
    print(inspect_dataset(options.path, options.out, n_images=options.n))
