"""Generate the shapes dataset as WebDataset shards, in parallel, deterministically and resumably.

Sample ``i`` of split ``s`` is drawn from its own random stream seeded by ``(seed, s, i)``, so
the output does not depend on the number of workers or on the order shards are written in,
and the splits never share a stream. A killed run is resumed by running the same command:
complete shards (written atomically) are kept and the rest are generated.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..image_io import encode_image
from ..shards import (
    INDEX_FORMAT,
    INDEX_NAME,
    SAMPLES_PER_SHARD,
    read_index,
    remove_stale_temporaries,
    shard_name,
    write_json_atomic,
    write_shard,
)
from ..workers import exit_with_parent
from . import captions as captions_module
from .captions import describe
from .defaults import POSITION_PROB
from .render import anchor, bbox, render
from .scene import BACKGROUND_STYLES, COLOURS, KINDS, POSITIONS, RELATIONS, SIZES, Scene, sample_scene

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
CAPTIONS_PER_SAMPLE = 3
GENERATOR_VERSION = 1
PENDING_NAME = ".pending.json"


class DatasetExistsError(FileExistsError):
    """The output directory holds a dataset made with other arguments."""


@dataclass(frozen=True)
class ShapesConfig:
    seed: int = 0
    size: int = 256
    image_format: str = "png"
    samples_per_shard: int = SAMPLES_PER_SHARD
    position_prob: float = POSITION_PROB  # chance of a position word per single object in a caption

    def record(self, counts: dict[str, int]) -> dict:
        """The arguments that determine every output byte (stored in ``index.json``; ``position_prob``
        only when it is not the default, so datasets made before it existed still match)."""
        extra = {} if self.position_prob == POSITION_PROB else {"position_prob": self.position_prob}
        return {
            "generator": "shapes",
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "size": self.size,
            "format": self.image_format,
            "samples_per_shard": self.samples_per_shard,
            "counts": counts,
            **extra,
        }


def _round(values) -> list[float]:
    return [round(float(v), 2) for v in values]


def scene_metadata(scene: Scene) -> dict:
    """The exact attributes of every object (kind, colour, size, position, box) and the relations."""
    objects = []
    for obj in scene.objects:
        objects.append(
            {
                "kind": obj.kind,
                "colour": obj.colour,
                "rgb": list(COLOURS[obj.colour]),
                "size": obj.size,
                "position": obj.position,
                "cell": [obj.row, obj.col],
                "centre": _round(obj.centre),
                "radius": round(obj.radius, 2),
                "bbox": _round(bbox(obj)),
                "anchor": _round(anchor(obj)),
            }
        )
    return {
        "objects": objects,
        "count": len(objects),
        "relations": [list(r) for r in scene.relations()],
        "background": {
            "colour": scene.background,
            "rgb": list(COLOURS[scene.background]),
            "style": scene.background_style,
        },
        "image_size": scene.image_size,
    }


def sample_key(split: str, index: int) -> str:
    return f"{split}_{index:07d}"


def make_sample(config: ShapesConfig, split: str, index: int) -> dict:
    """The shard entry of sample ``index`` of ``split``: image bytes, caption and metadata."""
    rng = np.random.default_rng([config.seed, SPLIT_IDS[split], index])
    scene = sample_scene(rng, config.size)
    texts = [describe(scene, rng, config.position_prob) for _ in range(CAPTIONS_PER_SAMPLE)]
    key = sample_key(split, index)
    meta = {"key": key, "split": split, "index": index, "caption": texts[0], "captions": texts}
    meta |= scene_metadata(scene)
    ext = "jpg" if config.image_format in ("jpg", "jpeg") else "png"
    return {
        "__key__": key,
        ext: encode_image(render(scene), config.image_format),
        "txt": texts[0].encode("utf-8"),
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }


def _write_shard_job(job: tuple[ShapesConfig, str, int, int, str]) -> int:
    config, split, start, stop, path = job
    return write_shard(path, (make_sample(config, split, i) for i in range(start, stop)))


def _shard_jobs(config: ShapesConfig, out: Path, counts: dict[str, int]) -> list[tuple]:
    jobs = []
    for split, count in counts.items():
        for k in range(math.ceil(count / config.samples_per_shard)):
            start = k * config.samples_per_shard
            stop = min(count, start + config.samples_per_shard)
            jobs.append((config, split, start, stop, str(out / shard_name(split, k))))
    return jobs


def _check_existing(out: Path, record: dict, overwrite: bool) -> bool:
    """True when ``out`` already holds this exact dataset; raise or clean up on a different one."""
    index = read_index(out)
    pending = out / PENDING_NAME
    previous = index.get("args") if index else (json.loads(pending.read_text()) if pending.exists() else None)
    if previous == record and index:
        return True
    stale = sorted(out.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
    if previous is None and not stale:
        return False
    if previous != record:
        if not overwrite:
            what = (
                "a dataset"
                if index
                else ("an unfinished dataset" if previous else "shards without an index.json")
            )
            raise DatasetExistsError(
                f"'{out}' holds {what} made with other arguments; pass --overwrite to replace it "
                f"or choose another --out.\n  existing: {previous}\n  requested: {record}"
            )
        for path in stale:
            path.unlink()
        (out / INDEX_NAME).unlink(missing_ok=True)
    return False


def generate_shapes(
    out: str | os.PathLike,
    counts: dict[str, int],
    config: ShapesConfig = ShapesConfig(),
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the shapes shards for ``counts`` (split -> samples) under ``out`` and its ``index.json``.

    Returns the index. Re-running with the same arguments does nothing; after a kill it writes
    only the missing shards; other arguments need ``overwrite``.
    """
    unknown = set(counts) - set(SPLIT_IDS)
    if unknown:
        raise ValueError(f"Unknown split(s) {sorted(unknown)}: use {sorted(SPLIT_IDS)}")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"Sample counts must be >= 0, got {counts}")
    if config.size < 32:
        raise ValueError(f"--size must be at least 32 pixels, got {config.size}")
    if config.samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be at least 1, got {config.samples_per_shard}")
    if not 0.0 <= config.position_prob <= 1.0:
        raise ValueError(f"--position-prob must be in [0, 1], got {config.position_prob}")
    counts = {split: n for split, n in counts.items() if n > 0}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = config.record(counts)
    remove_stale_temporaries(out)
    if _check_existing(out, record, overwrite):
        (out / PENDING_NAME).unlink(missing_ok=True)  # a kill after index.json was written
        return read_index(out)
    write_json_atomic(out / PENDING_NAME, record)
    jobs = _shard_jobs(config, out, counts)
    todo = [job for job in jobs if not Path(job[4]).exists()]
    total = sum(counts.values())
    done = total - sum(job[3] - job[2] for job in todo)
    with tqdm(total=total, initial=done, unit="img", desc=f"shapes -> {out}", disable=not progress) as bar:
        if workers <= 1:
            for job in todo:
                bar.update(_write_shard_job(job))
        else:
            with ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
                for future in as_completed([pool.submit(_write_shard_job, job) for job in todo]):
                    bar.update(future.result())
    index = {
        "format": INDEX_FORMAT,
        "args": record,
        "splits": {
            split: {
                "count": count,
                "shards": [Path(job[4]).name for job in jobs if job[1] == split],
                "shard_counts": [job[3] - job[2] for job in jobs if job[1] == split],
            }
            for split, count in counts.items()
        },
        "vocabulary": {
            "kinds": list(KINDS),
            "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
            "sizes": list(SIZES),
            "positions": list(POSITIONS),
            "relations": list(RELATIONS),
            "background_styles": list(BACKGROUND_STYLES),
            "kind_words": {k: list(v) for k, v in captions_module.KIND_WORDS.items()},
        },
    }
    write_json_atomic(out / INDEX_NAME, index)
    (out / PENDING_NAME).unlink(missing_ok=True)
    return index
