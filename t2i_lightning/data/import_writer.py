"""Writing imported image-caption samples as shards: the parallel shard jobs behind ``t2i data coco``
and ``t2i data folder`` (:mod:`t2i_lightning.data.importers`) and the report of what they wrote.

Shard ``k`` holds candidates ``k*samples_per_shard ...``; images that fail to decode are skipped
inside their shard job, so a shard may hold fewer samples, but the bytes never depend on ``workers``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .image_io import encode_image, open_image, resize_square, to_rgb
from .shards import remove_stale_temporaries, shard_name, update_index, write_shard

log = logging.getLogger(__name__)

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


def clean_caption(text: str) -> str:
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


def shard_options(
    size: int, resize: str, image_format: str, samples_per_shard: int, part: tuple[float, float] = (0.0, 1.0)
) -> dict:  # fmt: skip
    """The validated shard-writing options (recorded in index.json). ``part`` = (a, b): only the items
    from fraction a to b of the importer's order are written (to carve several splits out of one)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if resize not in ("border", "center-crop"):
        raise ValueError(f"Unknown resize mode {resize!r}: use 'border' or 'center-crop'")
    if image_format not in ("png", "jpg", "jpeg"):
        raise ValueError(f"Unknown image format {image_format!r}: use 'png' or 'jpg'")
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    start, end = part
    if not 0 <= start < end <= 1:
        raise ValueError(f"part must be two fractions 0 <= a < b <= 1, got {start}:{end}")
    options = {"size": size, "resize": resize, "format": image_format, "samples_per_shard": samples_per_shard}
    return options if (start, end) == (0.0, 1.0) else {**options, "part": [start, end]}


def take_part(items: list, part: list[float] | None) -> list:
    """The items from fraction ``part[0]`` to ``part[1]`` of the list (all without a part): consecutive
    parts such as 0:0.8 and 0.8:1 share no item and together hold every one."""
    if part is None:
        return items
    return items[round(part[0] * len(items)) : round(part[1] * len(items))]


def write_split(out, split, items, skipped, args: dict, *, workers: int, progress: bool) -> ImportReport:
    """Write ``items`` as shards of ``split`` under ``out`` (parallel over shards) and index them.

    ``args`` holds the importer's arguments, including the options from :func:`_options`.
    """
    size, resize, image_format = args["size"], args["resize"], args["format"]
    samples_per_shard = args["samples_per_shard"]
    items = take_part(items, args.get("part"))
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
