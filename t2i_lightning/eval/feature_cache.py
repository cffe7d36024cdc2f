"""The reference set's features in each instrument's space (judge, CLIP, Inception), cached on disk.

Extracting them is a fixed cost of every evaluation (Inception-v3 at 299 px on every reference image),
and they depend only on the reference images and the instrument. Each is cached under
``<out>/reference-cache/<space>-<digest>.pt`` with the record of what it was computed from: the
dataset, split and shards (path, size, modification time), N, a SHA-256 of the reference images
themselves, and the instrument (its weights file and that file's SHA-256, the device it ran on). The
file name is the record's digest; a reader still compares the whole stored record and recomputes on
any difference, so stale features are never reused. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.shards import atomic_path
from ..nn.clip import file_digest
from .reference import ReferenceSet

CACHE_DIR = "reference-cache"


def weights_identity(path: str | None, device: torch.device | str, **extra) -> dict:
    """An instrument as the cache knows it: its weights (a file, with its SHA-256; or a pretrained tag),
    the device it runs on and ``extra`` (e.g. the model name)."""
    digest = file_digest(path, 64) if path and os.path.isfile(path) else None
    return {"weights": path, "sha256": digest, "device": torch.device(device).type, **extra}


def reference_identity(ref: ReferenceSet) -> dict:
    """Where the reference set was read (dataset, split, shards), its size and a SHA-256 of its images."""
    images = hashlib.sha256(ref.images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return {**ref.source, "n": len(ref), "images_sha256": images, "image_shape": list(ref.images.shape[1:])}


def cached_features(
    directory: str | os.PathLike, space: str, ref: ReferenceSet, instrument: dict,
    extract: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, bool]:  # fmt: skip
    """``extract(ref.images)`` for the feature space ``space``, read from ``directory`` when a file made from
    the same reference set and ``instrument`` is there, else computed and written; and whether it was read."""
    record = json.dumps({"space": space, "reference": reference_identity(ref), "instrument": instrument}, sort_keys=True)
    path = Path(directory) / f"{space}-{hashlib.sha256(record.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("record") == record:
            return stored["features"], True
    features = extract(ref.images).detach().cpu()
    with atomic_path(path) as tmp:
        torch.save({"record": record, "features": features}, tmp)
    return features, False
