"""Embedding shards: ``KEY.img.npy`` and ``KEY.txt.npy`` (float16) mirroring image shards, plus ``stats.json``.

An embedding directory ``<dataset>/emb-<clip-id>/`` holds one shard per image shard, with the
same name and the same keys in the same order (minus samples the extractor had to skip), and a
``stats.json`` with the CLIP's identity and per-dimension mean/std of each side (float64). Beside each
shard, ``<name>.tar.source.json`` records the fingerprint of the image shard it was extracted from
(:func:`shard_fingerprint`): extraction re-does a shard whose images have changed since (a re-import
in place), and the decoders' data refuse embeddings of images that are no longer there.
"""

from __future__ import annotations

import hashlib
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


SOURCE_SUFFIX = ".source.json"
FINGERPRINT_BYTES = 1 << 20


def shard_fingerprint(path: str | os.PathLike) -> dict:
    """What identifies an image shard's contents, cheaply: its size and the sha256 of its first and last
    MiB (where a re-import with other options, another order or other images differs; reading whole
    shards would double the I/O of every extraction and every training start)."""
    path = Path(path)
    size = path.stat().st_size
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        sha.update(handle.read(FINGERPRINT_BYTES))
        handle.seek(max(0, size - FINGERPRINT_BYTES))
        sha.update(handle.read(FINGERPRINT_BYTES))
    return {"size": size, "head_tail_sha256": sha.hexdigest()}


def source_record(embedding_shard: str | os.PathLike) -> Path:
    """Where the fingerprint of an embedding shard's source image shard is kept."""
    embedding_shard = Path(embedding_shard)
    return embedding_shard.with_name(embedding_shard.name + SOURCE_SUFFIX)


def source_changed(embedding_shard: str | os.PathLike, image_shard: str) -> bool:
    """Whether ``image_shard`` is no longer the shard ``embedding_shard`` was extracted from (False when
    that cannot be told: an extraction older than the records, or a remote shard)."""
    record = source_record(embedding_shard)
    if not record.is_file() or not os.path.isfile(image_shard):
        return False
    recorded = json.loads(record.read_text())
    return {k: recorded.get(k) for k in ("size", "head_tail_sha256")} != shard_fingerprint(image_shard)
