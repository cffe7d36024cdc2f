"""Embedding shards: ``KEY.img.npy`` and ``KEY.txt.npy`` (float16) mirroring image shards, plus ``stats.json``.

An embedding directory ``<dataset>/emb-<clip-id>/`` holds one shard per image shard, with the
same name and the same keys in the same order (minus samples the extractor had to skip), and a
``stats.json`` with the CLIP's identity and per-dimension mean/std of each side (float64).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..registry import make_command

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
        raise FileNotFoundError(f"No {STATS_NAME} in '{directory}': extract embeddings first ({make_command('embed')})")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Moments:
    """Count, per-dimension mean and sum of squared deviations (M2) of embeddings, in float64.

    Each shard's moments are computed once, from the float16 arrays written, and combined with
    the pairwise update of Chan, Golub and LeVeque (1979): for parts A and B with n = n_A + n_B
    and d = mean_B - mean_A, mean = mean_A + d n_B / n and M2 = M2_A + M2_B + d^2 n_A n_B / n.
    The population std is sqrt(M2 / n). Combined in the same order, the same shards give the same
    bits whichever run or rank computed each part.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls) -> Moments:
        """No rows: the identity of ``+``."""
        return cls(0, np.zeros(0), np.zeros(0))

    @classmethod
    def of(cls, array: np.ndarray) -> Moments:
        """The moments of the rows of ``array`` (N x D, any float dtype; N may be 0)."""
        rows = array.reshape(-1, array.shape[-1]).astype(np.float64)
        if not len(rows):
            return cls.empty()
        mean = rows.mean(axis=0)
        return cls(len(rows), mean, ((rows - mean) ** 2).sum(axis=0))

    def __add__(self, other: Moments) -> Moments:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count,
            self.mean + delta * (other.count / count),
            self.m2 + other.m2 + delta**2 * (self.count * other.count / count),
        )

    def mean_std(self) -> tuple[list[float], list[float]]:
        """The per-dimension mean and population standard deviation."""
        return self.mean.tolist(), np.sqrt(self.m2 / self.count).tolist()
