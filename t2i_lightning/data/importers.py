"""Import real image-caption data (COCO captions, or a folder of images) as WebDataset shards.

Both importers write the project's shard format (``KEY.png|jpg``, ``KEY.txt`` = first caption,
``KEY.json`` = metadata with all captions) atomically and record the split in ``index.json``.
Shard ``k`` holds candidates ``k*samples_per_shard ...``; images that fail to decode are skipped
inside their shard job, so a shard may hold fewer samples, but the bytes never depend on
``workers``. Every run rewrites all shards of the split and removes leftovers of a larger
earlier import of it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from .image_io import encode_image, open_image, resize_square, to_rgb
from .shards import SAMPLES_PER_SHARD, remove_stale_temporaries, shard_name, update_index, write_shard

log = logging.getLogger(__name__)
FOLDER_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# A candidate sample: (key, image path, name for reports, captions, extra metadata).
Item = tuple[str, str, str, list[str], dict]


@dataclass
class ImportReport:
    """What an import wrote: split, sample count, skipped files with reasons, shard names."""

    split: str
    written: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    out: str = ""

    def summary(self) -> str:
        """A few lines for the CLI to print."""
        lines = [
            f"split '{self.split}': wrote {self.written} images in {len(self.shards)} shard(s) to {self.out}"
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more (listed in index.json)")
        return "\n".join(lines)


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _make_sample(item: Item, size: int, resize: str, image_format: str) -> dict:
    key, path, _name, captions, meta = item
    image = open_image(path)
    width, height = image.size
    ext = "jpg" if image_format in ("jpg", "jpeg") else "png"
    meta = {"key": key, "captions": captions, **meta, "width": width, "height": height}
    return {
        "__key__": key,
        ext: encode_image(resize_square(to_rgb(image), size, resize), image_format),
        "txt": captions[0].encode("utf-8"),
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }


def _shard_job(job: tuple[str, list[Item], int, str, str]) -> tuple[int, list[tuple[str, str]], int]:
    """Decode the job's images and write the good ones to its shard: (written, skipped, images)."""
    path, items, size, resize, image_format = job
    skipped: list[tuple[str, str]] = []

    def samples():
        for item in items:
            try:
                sample = _make_sample(item, size, resize, image_format)
            except Exception as exc:  # any decoder failure means "not a usable image"
                skipped.append((item[2], f"unreadable image ({type(exc).__name__}: {exc})"))
                continue
            yield sample

    return write_shard(path, samples()), skipped, len(items)


def _options(size: int, resize: str, image_format: str, samples_per_shard: int) -> dict:
    """The validated shard-writing options (recorded in index.json)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if resize not in ("border", "center-crop"):
        raise ValueError(f"Unknown resize mode {resize!r}: use 'border' or 'center-crop'")
    if image_format not in ("png", "jpg", "jpeg"):
        raise ValueError(f"Unknown image format {image_format!r}: use 'png' or 'jpg'")
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    return {"size": size, "resize": resize, "format": image_format, "samples_per_shard": samples_per_shard}


def _write_split(out, split, items, skipped, args: dict, *, workers: int, progress: bool) -> ImportReport:
    """Write ``items`` as shards of ``split`` under ``out`` (parallel over shards) and index them.

    ``args`` holds the importer's arguments, including the options from :func:`_options`.
    """
    size, resize, image_format = args["size"], args["resize"], args["format"]
    samples_per_shard = args["samples_per_shard"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    names = [shard_name(split, k) for k in range(math.ceil(len(items) / samples_per_shard))]
    jobs = [
        (
            str(out / name),
            items[k * samples_per_shard : (k + 1) * samples_per_shard],
            size,
            resize,
            image_format,
        )
        for k, name in enumerate(names)
    ]
    written, skipped = 0, list(skipped)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(
                total=len(items),
                unit="img",
                desc=f"{args['importer']} {split} -> {out}",
                disable=not progress,
            )
        )
        results = map(_shard_job, jobs)
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            stack.callback(pool.shutdown, cancel_futures=True)  # runs first: drop queued jobs on error
            results = (f.result() for f in as_completed([pool.submit(_shard_job, job) for job in jobs]))
        for count, bad, done in results:
            written += count
            skipped += bad
            bar.update(done)
    for old in out.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if old.name not in names:  # left by an earlier, larger import of this split
            old.unlink()
    skipped.sort()
    for name, reason in skipped:
        log.warning("skipped %s: %s", name, reason)
    entry = {
        "count": written,
        "shards": names,
        "skipped": [{"file": n, "reason": r} for n, r in skipped],
        "args": args,
    }  # per split too: the top-level "args" is the latest import's
    update_index(out, split, entry, args=args)
    return ImportReport(split, written, skipped, names, str(out))


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
    progress=True,
) -> ImportReport:
    """Import a COCO captions split: one sample per captioned image, ordered by image id.

    ``.txt`` is the image's first caption; ``.json`` holds all of them and the COCO id. Images
    missing on disk or undecodable are skipped and reported; files not in the JSON are ignored.
    """
    options = _options(size, resize, image_format, samples_per_shard)
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
        if _clean(ann.get("caption", "")):
            texts.setdefault(ann["image_id"], []).append(_clean(ann["caption"]))
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
    return _write_split(out, split, items, skipped, args, workers=workers, progress=progress)


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
    progress=True,
) -> ImportReport:
    """Import the images under ``images`` (recursively, sorted by relative path) with their captions.

    Captions come from a sidecar ``.txt`` per image (each non-empty line is one caption) or,
    with ``captions``, from a ``.csv``/``.jsonl`` table of ``file`` (relative to ``images``) and
    ``caption`` rows, in order. Images without captions and rows naming absent files are skipped
    and reported. Keys are the relative path with non-alphanumerics as ``_`` (made unique).
    """
    options = _options(size, resize, image_format, samples_per_shard)
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
                texts[rel] = [_clean(line) for line in lines if _clean(line)]
    else:
        captions = _require(captions, "Captions file")
        missing = set()
        for name, text in _read_caption_table(captions):
            rel = PurePosixPath(name.replace("\\", "/")).as_posix()
            if rel not in texts:
                missing.add(name)
            elif _clean(text):
                texts[rel].append(_clean(text))
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
    return _write_split(out, split, items, skipped, args, workers=workers, progress=progress)
