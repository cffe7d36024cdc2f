"""``t2i data inspect``: what a shard dataset holds (counts per split, captions) and a picture grid."""

from __future__ import annotations

import os
import tarfile
import textwrap
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .image_io import IMAGE_EXTENSIONS, open_image, save_png_atomic, to_rgb
from .shards import expected_samples, read_index, resolve_shards

SPLITS = ("train", "val", "test")


def split_of(shard: str) -> str:
    """The split a shard belongs to by its name (``val-000000.tar`` -> ``val``; img2dataset -> ``all``)."""
    stem = Path(shard).name.split(".")[0]
    prefix = stem.rsplit("-", 1)[0] if "-" in stem else ""
    return prefix or "all"


def read_samples(shard: str, limit: int | None = None) -> list[dict]:
    """The samples of one local shard as ``{"__key__", ext: bytes}`` dicts (in order)."""
    samples: dict[str, dict] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key, _, ext = base.partition(".")
            if key not in samples:
                if limit is not None and len(samples) >= limit:
                    break
                samples[key] = {"__key__": key}
            samples[key][ext] = tar.extractfile(member).read()
    return list(samples.values())


def scan_shard(shard: str) -> tuple[int, str | None]:
    """Distinct keys readable in a local shard (tar headers only) and, when it is cut short or is not a
    tar, why (None for a whole shard)."""
    keys: set[str] = set()
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.isfile():
                    keys.add(os.path.basename(member.name).split(".", 1)[0])
    except (tarfile.TarError, OSError) as error:  # truncated, corrupt or unreadable
        return len(keys), f"{type(error).__name__}: {error}"
    return len(keys), None


def captioned_grid(
    images: list[Image.Image], captions: list[str], tile: int = 128, columns: int = 4
) -> Image.Image:
    """Tile images in a grid with each caption wrapped beneath its image."""
    font = ImageFont.load_default(size=max(9, tile // 11))
    width_chars = max(10, int(tile / (font.size * 0.55)))
    wrapped = [textwrap.wrap(c, width_chars)[:5] for c in captions]
    line = font.size + 2
    cell_h = tile + 4 + line * max((len(w) for w in wrapped), default=1)
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (tile + 4) + 4, rows * cell_h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (image, lines) in enumerate(zip(images, wrapped, strict=True)):
        x, y = 4 + (i % columns) * (tile + 4), 4 + (i // columns) * cell_h
        grid.paste(image.resize((tile, tile), Image.Resampling.LANCZOS), (x, y))
        for j, text in enumerate(lines):
            draw.text((x, y + tile + 2 + j * line), text, fill=(0, 0, 0), font=font)
    return grid


def inspect_dataset(path: str, out: str | None = None, n_images: int = 16, n_captions: int = 5) -> str:
    """Describe the dataset at ``path`` (directory or shard spec); write a grid to ``out`` if given."""
    urls = resolve_shards(path)
    lines = [f"{path}: {len(urls)} shard(s)"]
    index = read_index(path) if os.path.isdir(path) else None
    if index and "args" in index:
        lines.append(f"  made by: {index['args']}")
    by_split: dict[str, list[str]] = defaultdict(list)
    for url in urls:
        by_split[split_of(url)].append(url)
    order = [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS))
    scans = {url: scan_shard(url) for url in urls}
    recorded = expected_samples(urls)
    scans = {  # a tar cut between two samples reads without an error: its index count tells
        url: (count, why or (f"the tar ends early, {recorded[url]} samples recorded" if count < recorded.get(url, 0) else None))
        for url, (count, why) in scans.items()
    }
    lines.append(f"  {'split':<8}{'shards':>8}{'samples':>10}")
    for split in order:
        lines.append(f"  {split:<8}{len(by_split[split]):>8}{sum(scans[u][0] for u in by_split[split]):>10}")
    damaged = [(url, count, why) for url, (count, why) in scans.items() if why]
    for url, count, why in damaged:
        lines.append(f"  damaged: {url} ({why}, after {count} readable samples)")
    whole = [url for split in order for url in by_split[split] if not scans[url][1]]
    if not whole:
        raise ValueError(f"Every shard of {path} is damaged: " + "; ".join(f"{u}: {why}" for u, _, why in damaged))
    first = whole[0]
    samples = read_samples(first, limit=max(n_images, n_captions))
    lines.append(f"  captions ({first}):")
    for sample in samples[:n_captions]:
        caption = sample.get("txt", b"").decode("utf-8", errors="replace").strip() or "(no caption)"
        lines.append(f"    {sample['__key__']}: {caption}")
    if out:
        images, captions = [], []
        for sample in samples:
            ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if ext is None or len(images) >= n_images:
                continue
            images.append(to_rgb(open_image(sample[ext])))
            captions.append(sample.get("txt", b"").decode("utf-8", errors="replace").strip())
        if images:
            save_png_atomic(captioned_grid(images, captions), out)
            lines.append(f"  grid of {len(images)} images: {out}")
    return "\n".join(lines)
