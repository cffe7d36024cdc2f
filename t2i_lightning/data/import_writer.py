"""Writing imported image-caption samples as shards: the parallel shard jobs behind ``t2i data coco``
and ``t2i data folder`` (:mod:`t2i_lightning.data.importers`) and the report of what they wrote.

Shard ``k`` holds candidates ``k*samples_per_shard ...``; images that fail to decode are skipped
inside their shard job, so a shard may hold fewer samples, but the bytes never depend on ``workers``.
Candidates are consumed as a stream, one shard at a time, with a bounded number of shard jobs in flight.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .image_io import encode_image, open_image, resize_square, to_rgb
from .shards import remove_stale_temporaries, shard_name, update_index, write_shard
from .workers import exit_with_parent

log = logging.getLogger(__name__)

# A candidate sample: (key, image path, name for reports, captions, extra metadata).
Item = tuple[str, str, str, list[str], dict]
# A shard job: (shard path, its candidates, size, resize mode, image format); its result:
# (samples written, skipped (name, reason), candidates done).
Job = tuple[str, list[Item], int, str, str]
Result = tuple[str, int, list[tuple[str, str]], int]  # (shard name, written, skipped, items)

JOBS_IN_FLIGHT_PER_WORKER = 2  # one running, one queued: workers never wait for the main process
SHOWN_SKIPPED = 10  # skipped files the console lists; index.json lists all


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
            lines += [f"  {line}" for line in skipped_lines(self.skipped)]
        return "\n".join(lines)


def skipped_lines(skipped: list[tuple[str, str]]) -> list[str]:
    """The first :data:`SHOWN_SKIPPED` skipped files with reasons and a count of the rest: thousands
    of missing images must not flood the console."""
    lines = [f"{name}: {reason}" for name, reason in skipped[:SHOWN_SKIPPED]]
    if len(skipped) > SHOWN_SKIPPED:
        lines.append(f"... and {len(skipped) - SHOWN_SKIPPED} more (all listed in index.json)")
    return lines


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


def _shard_job(job: Job) -> Result:
    """Decode the job's images and write the good ones to its shard: (shard name, written, skipped, images)."""
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

    return Path(path).name, write_shard(path, samples()), skipped, len(items)


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


def part_bounds(count: int, part: list[float]) -> tuple[int, int]:
    """The positions ``start <= i < stop`` that fraction ``part[0]`` to ``part[1]`` of ``count`` items covers:
    consecutive parts such as 0:0.8 and 0.8:1 share no item and together hold every one."""
    return round(part[0] * count), round(part[1] * count)


def take_part(items: list, part: list[float] | None) -> list:
    """The items :func:`part_bounds` selects (all without a part)."""
    if part is None:
        return items
    start, stop = part_bounds(len(items), part)
    return items[start:stop]


def _shard_jobs(out: Path, split: str, items: Iterable[Item], args: dict) -> Iterator[Job]:
    """One job per ``samples_per_shard`` consecutive items, cut from the stream only when asked for."""
    items = iter(items)
    for k in itertools.count():
        chunk = list(itertools.islice(items, args["samples_per_shard"]))
        if not chunk:
            return
        yield str(out / shard_name(split, k)), chunk, args["size"], args["resize"], args["format"]


def _run_jobs(jobs: Iterator[Job], workers: int) -> Iterator[Result]:
    """The results of :func:`_shard_job` over ``jobs`` in completion order, with at most
    ``JOBS_IN_FLIGHT_PER_WORKER * workers`` jobs submitted and unfinished: the next job (and its
    items) is taken from ``jobs`` only when one finishes, so memory does not grow with the dataset."""
    if workers <= 1:
        yield from map(_shard_job, jobs)
        return
    pool = ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),))
    pending: set = set()
    try:
        for job in jobs:
            pending.add(pool.submit(_shard_job, job))
            if len(pending) >= JOBS_IN_FLIGHT_PER_WORKER * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        yield from (future.result() for future in as_completed(pending))
    finally:
        pool.shutdown(cancel_futures=True)  # on an error: drop queued jobs, wait for running ones


def write_split(
    out, split, items: Iterable[Item], skipped: list, args: dict, *, workers: int, progress: bool, total=None
) -> ImportReport:  # fmt: skip
    """Write ``items`` as shards of ``split`` under ``out`` (parallel over shards) and index them.

    ``items`` may be a lazy stream (see :func:`_run_jobs`); the shard count is known once it ends.
    ``skipped`` (the importer's own skips) is read only then, so a stream may append to it as it goes.
    ``total`` (the item count, if known) sizes the progress bar. ``args`` holds the importer's
    arguments, including the options from :func:`shard_options`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    counts: dict[str, int] = {}
    unreadable: list = []
    desc = f"{args['importer']} {split} -> {out}"
    with tqdm(total=total, unit="img", desc=desc, disable=not progress) as bar:
        for name, count, bad, done in _run_jobs(_shard_jobs(out, split, items, args), workers):
            counts[name] = count
            unreadable += bad
            bar.update(done)
    names = [shard_name(split, k) for k in range(len(counts))]
    written = sum(counts.values())
    for old in out.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if old.name not in names:  # left by an earlier, larger import of this split
            old.unlink()
    skipped = sorted([*skipped, *unreadable])
    for line in skipped_lines(skipped):
        log.warning("skipped %s", line)
    entry = {
        "count": written,
        "shards": names,
        "shard_counts": [counts[name] for name in names],
        "skipped": [{"file": n, "reason": r} for n, r in skipped],
        "args": args,
    }  # per split too: the top-level "args" is the latest import's
    update_index(out, split, entry, args=args)
    return ImportReport(split, written, skipped, names, str(out))
