"""WebDataset streams split by rank and worker, with skipped samples counted into each batch.

Training streams resample shards forever from this rank's share (``resampled``) and are cut
into epochs by ``with_epoch``; evaluation streams read each shard of this rank's share once,
in order. Corrupt or incomplete samples are skipped with a warning, and the number of skips
(samples, or unreadable stretches of a damaged tar) travels with a batch as
``batch["skipped"]``, and the shard of each as ``batch["skipped_shards"]``, so the main process
can log them and name bad shards, whatever the number of worker processes.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from .decode import ShardMismatchError

log = logging.getLogger(__name__)


def worker_position() -> tuple[int, int, int]:
    """``(worker id, number of workers, worker seed)`` of the calling DataLoader process."""
    info = get_worker_info()
    if info is None:
        return 0, 1, torch.initial_seed()
    return info.id, info.num_workers, info.seed


def share(items: list[str], index: int, count: int) -> list[str]:
    """The ``index``-th of ``count`` interleaved shares of ``items``; all of them if too few to split."""
    return items[index::count] if len(items) >= count else list(items)


class RankWorkerShards(IterableDataset):
    """Yields ``{"url": ...}`` for the shards of this rank and worker.

    ``resampled=False``: the shard list is split by rank, then by worker, and read once in
    order (deterministic and finite). ``resampled=True``: each worker draws shards with
    replacement from its own share, forever, seeded by (seed, rank, worker seed), which the
    DataLoader derives from the global seed and the epoch.
    """

    def __init__(
        self, urls: list[str], rank: int = 0, world_size: int = 1, resampled: bool = False, seed: int = 0
    ):
        super().__init__()
        if not urls:
            raise ValueError("RankWorkerShards needs at least one shard")
        self.urls, self.rank, self.world_size = list(urls), rank, world_size
        self.resampled, self.seed = resampled, seed
        self.iterations = 0
        if len(self.urls) < world_size:
            log.warning("%d shards for %d ranks: every rank reads all of them", len(self.urls), world_size)

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, workers, worker_seed = worker_position()
        mine = share(share(self.urls, self.rank, self.world_size), worker, workers)
        if not self.resampled:
            for url in mine:
                yield {"url": url}
            return
        self.iterations += 1
        rng = random.Random(hash((self.seed, self.rank, worker_seed, self.iterations)))
        while True:
            yield {"url": rng.choice(mine)}


def shard_of(error: BaseException) -> str:
    """The shard an error of the data pipeline came from: set by :func:`tagged_with_shard`, or the URL
    webdataset appends to the arguments of a tar-reading error; "?" when neither says."""
    url = getattr(error, "shard_url", None)
    if url:
        return str(url)
    strings = [arg for arg in getattr(error, "args", ()) if isinstance(arg, str)]
    return next((arg for arg in reversed(strings) if ".tar" in arg), "?")


def tagged_with_shard(decode: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """``decode`` whose errors carry ``shard_url``, the shard of the sample that failed."""

    @functools.wraps(decode)
    def run(sample: dict) -> dict:
        try:
            return decode(sample)
        except Exception as error:
            error.shard_url = sample.get("__url__")
            raise

    return run


class SkipCounter:
    """Counts and reports skipped samples, per shard, inside one worker process (a webdataset handler).

    Errors that mean the data is wrong as a whole rather than one sample being bad
    (``fatal``, e.g. image and embedding shards that do not mirror each other) are re-raised.
    """

    fatal: tuple[type[BaseException], ...] = (ShardMismatchError,)

    def __init__(self) -> None:
        self.shards: list[str] = []

    def __call__(self, error: BaseException) -> bool:
        if isinstance(error, self.fatal):
            raise error
        self.shards.append(shard_of(error))
        log.warning("skipping: %s", error)
        return True

    def take(self) -> dict[str, Any]:
        """The skips since the last call, as batch entries: ``skipped`` (a count, a Python int, so that
        reading it never waits on the device the batch was moved to) and ``skipped_shards`` (the shard of
        each skip)."""
        shards, self.shards = self.shards, []
        return {"skipped": len(shards), "skipped_shards": shards}


def batches_with_skips(
    samples: Iterator[dict], batch_size: int, collate: Callable, counter: SkipCounter, partial: bool
) -> Iterator[dict[str, Any]]:
    """Group examples into collated batches, each carrying the skips counted up to its release.

    Each batch is held back until the next one is complete (or the stream ends), so skips
    found after the last full batch, e.g. in a truncated final shard, are still reported.
    """
    held: dict | None = None
    bucket: list[dict] = []

    def release(batch: dict) -> dict:
        return {**batch, **counter.take()}

    for sample in samples:
        bucket.append(sample)
        if len(bucket) == batch_size:
            if held is not None:
                yield release(held)
            held, bucket = collate(bucket), []
    if bucket and partial:
        if held is not None:
            yield release(held)
        held = collate(bucket)
    if held is not None:
        yield release(held)


def seeded_shuffle(samples: Iterator[dict], bufsize: int, seed: int) -> Iterator[dict]:
    """webdataset's buffer shuffle, with an rng seeded per worker and epoch (reproducible runs)."""
    _, _, worker_seed = worker_position()
    rng = random.Random(hash((seed, worker_seed)))
    yield from wds.shuffle(bufsize, min(bufsize, 100), rng=rng)(samples)


def build_stream(
    shards: RankWorkerShards,
    decode: Callable[[dict], dict],
    collate: Callable[[list[dict]], dict],
    batch_size: int,
    shuffle_buffer: int = 0,
    partial: bool = True,
    seed: int = 0,
) -> wds.DataPipeline:
    """shards -> tar members -> samples -> (shuffle) -> decode -> batches with skip counts."""
    counter = SkipCounter()
    stages: list = [shards, wds.tarfile_to_samples(handler=counter)]
    if shuffle_buffer > 0:
        stages.append(functools.partial(seeded_shuffle, bufsize=shuffle_buffer, seed=seed))
    stages.append(wds.map(tagged_with_shard(decode), handler=counter))
    stages.append(
        functools.partial(
            batches_with_skips, batch_size=batch_size, collate=collate, counter=counter, partial=partial
        )
    )
    return wds.DataPipeline(*stages)


class ShardAlignedBatches(IterableDataset):
    """Batches that never span two shards, for jobs that write one output per input shard.

    Each shard of this rank and worker is read once, in order. Every batch carries ``shard``
    (its URL), ``skipped`` and ``shard_done``, which is True on the shard's last batch; a
    shard with no usable sample still yields one empty batch (``key == []``) so that its
    output is written too.
    """

    def __init__(
        self,
        urls: list[str],
        decode: Callable[[dict], dict],
        collate: Callable[[list[dict]], dict],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        self.urls, self.decode, self.collate = list(urls), decode, collate
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def _batch(self, examples: list[dict], url: str, counter: SkipCounter, done: bool) -> dict[str, Any]:
        batch = self.collate(examples) if examples else {"key": []}
        return {**batch, "shard": url, "shard_done": done, **counter.take()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers, _ = worker_position()
        for url in share(share(self.urls, self.rank, self.world_size), worker, workers):
            counter = SkipCounter()
            samples = wds.DataPipeline(
                wds.SimpleShardList([url]),
                wds.tarfile_to_samples(handler=counter),
                wds.map(tagged_with_shard(self.decode), handler=counter),
            )
            held: list[dict] | None = None
            bucket: list[dict] = []
            for example in samples:
                bucket.append(example)
                if len(bucket) == self.batch_size:
                    if held is not None:
                        yield self._batch(held, url, counter, done=False)
                    held, bucket = bucket, []
            if held is not None and bucket:
                yield self._batch(held, url, counter, done=False)
                held = None
            yield self._batch(held if held is not None else bucket, url, counter, done=True)
