"""Import real image-caption data (COCO captions, or a folder of images) as WebDataset shards.

Both importers write the project's shard format (``KEY.png|jpg``, ``KEY.txt`` = first caption,
``KEY.json`` = metadata with all captions) atomically and record the split in ``index.json``, through
:mod:`t2i_lightning.data.import_writer`. Every run rewrites all shards of the split and removes leftovers of a larger
earlier import of it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .caption_table import CaptionTable
from .import_writer import (
    ImportReport,
    Item,
    clean_caption,
    part_bounds,
    shard_options,
    take_part,
    write_split,
)
from .shards import SAMPLES_PER_SHARD

FOLDER_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _require(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def infer_split(captions: str | os.PathLike) -> str:
    """The split a captions file name implies: 'val', 'test', else 'train'."""
    name = Path(captions).name.lower()
    return "val" if "val" in name else "test" if "test" in name else "train"


def import_coco(
    images,
    captions,
    out,
    *,
    split=None,
    size=256,
    resize="border",
    image_format="png",
    workers=1,
    samples_per_shard=SAMPLES_PER_SHARD,
    part=(0.0, 1.0),
    progress=True,
) -> ImportReport:
    """Import a COCO captions split: one sample per captioned image, ordered by image id.

    ``.txt`` is the image's first caption; ``.json`` holds all of them and the COCO id. Images
    missing on disk or undecodable are skipped and reported; files not in the JSON are ignored.
    """
    options = shard_options(size, resize, image_format, samples_per_shard, part)
    images, captions = _require(images, "COCO images directory"), _require(captions, "COCO captions file")
    try:
        data = json.loads(captions.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{captions} is not valid JSON: {exc}") from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ValueError(f"{captions} is not a COCO captions file: it needs 'images' and 'annotations' lists")
    split = split or infer_split(captions)
    texts: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        if clean_caption(ann.get("caption", "")):
            texts.setdefault(ann["image_id"], []).append(clean_caption(ann["caption"]))
    items, skipped = [], []
    for info in sorted(data["images"], key=lambda info: info["id"]):
        image_id, file_name = info["id"], info["file_name"]
        if image_id not in texts:
            skipped.append((file_name, "no caption"))
        elif not (images / file_name).is_file():
            skipped.append((file_name, "file not found"))
        else:
            meta = {"coco_image_id": image_id, "file_name": file_name, "source": "coco"}
            items.append((f"coco_{image_id:012d}", str(images / file_name), file_name, texts[image_id], meta))
    items = take_part(items, options.get("part"))
    args = {"importer": "coco", "images": str(images), "captions": str(captions), **options}
    return write_split(out, split, items, skipped, args, workers=workers, progress=progress, total=len(items))


def _folder_key(rel: str, used: set[str]) -> str:
    """``rel`` with every non-alphanumeric character as ``_``, suffixed ``_2``, ``_3``... if taken."""
    base = re.sub(r"[^A-Za-z0-9]", "_", rel)
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


def walk_images(root: Path, skipped: list[tuple[str, str]], prefix: str = "") -> Iterator[str]:
    """The relative POSIX paths of the image files under ``root``, lazily, in ``sorted()`` path order.

    One directory is listed at a time. Sorting each one's entries with ``/`` after the names of
    sub-directories gives the order of sorting all paths at once (``a-b.jpg`` < ``a.jpg`` < ``a/x.jpg``),
    so memory is the largest directory listing, not the dataset. As with ``Path.rglob``, symlinked
    directories are not entered; unreadable ones are added to ``skipped``.
    """
    names = []
    try:
        with os.scandir(root / prefix) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name + "/")
                elif PurePosixPath(entry.name).suffix.lower() in FOLDER_EXTENSIONS and entry.is_file():
                    names.append(entry.name)
    except PermissionError as exc:
        skipped.append((prefix, f"unreadable directory ({exc.strerror})"))
    for name in sorted(names):
        if name.endswith("/"):
            yield from walk_images(root, skipped, prefix + name)
        else:
            yield prefix + name


def _sidecar_captions(image: Path) -> list[str]:
    """The non-empty lines of the ``.txt`` file next to ``image`` (none without one)."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return []
    return [
        clean_caption(line)
        for line in sidecar.read_text(encoding="utf-8").splitlines()
        if clean_caption(line)
    ]


def _folder_items(
    images: Path, table: CaptionTable | None, part: tuple[int, float], skipped: list[tuple[str, str]]
) -> Iterator[Item]:  # fmt: skip
    """The candidate samples of the images at walk positions ``part[0] <= i < part[1]``, lazily.

    Images without captions are added to ``skipped`` as they come, then the table's rows that name
    no image. Memory: the set of keys handed out (to keep keys unique), about 100 bytes per image.
    """
    start, stop = part
    used: set[str] = set()
    for index, rel in enumerate(walk_images(images, skipped)):
        if not start <= index < stop:
            if table is not None:
                table.take(rel)  # a row is unmatched only if no image at all has its name
            continue
        texts = table.take(rel) if table is not None else _sidecar_captions(images / rel)
        if not texts:
            skipped.append((rel, "no caption"))
            continue
        yield _folder_key(rel, used), str(images / rel), rel, texts, {"file": rel, "source": "folder"}
    if table is not None:
        skipped.extend(table.unmatched())


def _walk_positions(images: Path, part: list[float] | None) -> tuple[int, float]:
    """The walk positions ``--part`` selects: all without one; else a counting walk first."""
    if part is None:
        return 0, math.inf
    return part_bounds(sum(1 for _ in walk_images(images, [])), part)


def import_folder(
    images,
    out,
    *,
    captions=None,
    split="train",
    size=256,
    resize="border",
    image_format="png",
    workers=1,
    samples_per_shard=SAMPLES_PER_SHARD,
    part=(0.0, 1.0),
    progress=True,
) -> ImportReport:
    """Import the images under ``images`` (recursively, sorted by relative path) with their captions.

    Captions come from a sidecar ``.txt`` per image (each non-empty line is one caption) or,
    with ``captions``, from a ``.csv``/``.jsonl`` table of ``file`` (relative to ``images``) and
    ``caption`` rows, in order. Images without captions and rows naming absent files are skipped
    and reported. Keys are the relative path with non-alphanumerics as ``_`` (made unique).

    The folder is walked and written as a stream (:func:`walk_images`, :func:`write_split`); memory
    grows by about 100 bytes per image (the key set), a caption table stays on disk. ``part`` = (a, b) takes the image files (captioned or not) at positions
    a*n to b*n of the n under the folder in path order; n comes from a first, counting walk.
    """
    options = shard_options(size, resize, image_format, samples_per_shard, part)
    images = _require(images, "Images directory")
    if not images.is_dir():
        raise NotADirectoryError(f"Images directory is not a directory: {images}")
    if next(walk_images(images, []), None) is None:
        raise ValueError(f"No image files ({', '.join(sorted(FOLDER_EXTENSIONS))}) under {images}")
    captions = None if captions is None else _require(captions, "Captions file")
    args = {
        "importer": "folder",
        "images": str(images),
        "captions": None if captions is None else str(captions),
        **options,
    }
    positions = _walk_positions(images, options.get("part"))
    with CaptionTable(captions, Path(out)) if captions is not None else contextlib.nullcontext() as table:
        skipped: list[tuple[str, str]] = []
        items = _folder_items(images, table, positions, skipped)
        return write_split(out, split, items, skipped, args, workers=workers, progress=progress)
