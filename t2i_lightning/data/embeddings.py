"""Embedding shards: ``KEY.img.npy`` and ``KEY.txt.npy`` (float16) mirroring image shards, plus ``stats.json``.

An embedding directory ``<dataset>/emb-<clip-id>/`` holds one shard per image shard, with the
same name and the same keys in the same order (minus samples the extractor had to skip), and a
``stats.json`` with the CLIP's identity and per-dimension mean/std of each side (float64).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

IMAGE_MEMBER = "img.npy"
TEXT_MEMBER = "txt.npy"
STATS_NAME = "stats.json"


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """An array from ``.npy`` bytes; object arrays (pickle) are refused."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def embedding_dir(dataset: str | os.PathLike, clip_id: str) -> Path:
    """Where the embeddings of ``dataset`` by the CLIP ``clip_id`` live."""
    return Path(dataset) / f"emb-{clip_id}"


def read_stats(directory: str | os.PathLike) -> dict:
    """The ``stats.json`` of an embedding directory, with a clear error when it is missing."""
    path = Path(directory) / STATS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No {STATS_NAME} in '{directory}': extract embeddings first (`make embed`)")
    return json.loads(path.read_text())


def embedding_statistics(arrays: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-dimension mean and (population) standard deviation of stacked arrays, in float64."""
    stacked = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays]).astype(np.float64)
    return stacked.mean(axis=0).tolist(), stacked.std(axis=0).tolist()
