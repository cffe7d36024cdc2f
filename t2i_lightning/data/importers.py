"""Import real image-caption data (COCO captions, or a folder of images) as WebDataset shards.

Both importers write the project's shard format (``KEY.png|jpg``, ``KEY.txt`` = first caption,
``KEY.json`` = metadata with all captions) atomically and record the split in ``index.json``, through
:mod:`t2i_lightning.data.import_writer`. Every run rewrites all shards of the split and removes leftovers of a larger
earlier import of it.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path, PurePosixPath

from .import_writer import ImportReport, clean_caption, shard_options, write_split
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
    args = {"importer": "coco", "images": str(images), "captions": str(captions), **options}
    return write_split(out, split, items, skipped, args, workers=workers, progress=progress)


def _read_caption_table(path: Path) -> list[tuple[str, str]]:
    """(file, caption) rows of a ``.csv`` (header ``file,caption``) or ``.jsonl`` captions file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if not {"file", "caption"} <= set(reader.fieldnames or ()):
                raise ValueError(f"{path} needs a header row with 'file' and 'caption' columns")
            return [(row["file"] or "", row["caption"] or "") for row in reader]
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict) or "file" not in obj or "caption" not in obj:
                    raise ValueError(f"{path} line {n}: expected an object with 'file' and 'caption'")
                rows.append((str(obj["file"]), str(obj["caption"])))
        return rows
    raise ValueError(f"Unsupported captions file {path}: use a .csv (file,caption) or .jsonl file")


def _folder_key(rel: str, used: set[str]) -> str:
    """``rel`` with every non-alphanumeric character as ``_``, suffixed ``_2``, ``_3``... if taken."""
    base = re.sub(r"[^A-Za-z0-9]", "_", rel)
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


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
    """
    options = shard_options(size, resize, image_format, samples_per_shard, part)
    images = _require(images, "Images directory")
    if not images.is_dir():
        raise NotADirectoryError(f"Images directory is not a directory: {images}")
    files = sorted(
        p.relative_to(images).as_posix()
        for p in images.rglob("*")
        if p.suffix.lower() in FOLDER_EXTENSIONS and p.is_file()
    )
    if not files:
        raise ValueError(f"No image files ({', '.join(sorted(FOLDER_EXTENSIONS))}) under {images}")
    texts: dict[str, list[str]] = {rel: [] for rel in files}
    skipped: list[tuple[str, str]] = []
    if captions is None:
        for rel in files:
            sidecar = (images / rel).with_suffix(".txt")
            if sidecar.is_file():
                lines = sidecar.read_text(encoding="utf-8").splitlines()
                texts[rel] = [clean_caption(line) for line in lines if clean_caption(line)]
    else:
        captions = _require(captions, "Captions file")
        missing = set()
        for name, text in _read_caption_table(captions):
            rel = PurePosixPath(name.replace("\\", "/")).as_posix()
            if rel not in texts:
                missing.add(name)
            elif clean_caption(text):
                texts[rel].append(clean_caption(text))
        skipped += [(name, "in captions file but no such image") for name in sorted(missing)]
    items, used = [], set()
    for rel in files:
        if not texts[rel]:
            skipped.append((rel, "no caption"))
            continue
        key = _folder_key(rel, used)
        items.append((key, str(images / rel), rel, texts[rel], {"file": rel, "source": "folder"}))
    args = {
        "importer": "folder",
        "images": str(images),
        "captions": None if captions is None else str(captions),
        **options,
    }
    return write_split(out, split, items, skipped, args, workers=workers, progress=progress)
