"""WebDataset streams split by rank and worker, with skipped samples counted into each batch.

Training streams resample shards forever from this rank's share (``resampled``) and are cut
into epochs by ``with_epoch``; evaluation streams read each shard of this rank's share once,
in order. Corrupt or incomplete samples are skipped with a warning, and the number of skipped
samples (those that fail to decode, and those a damaged tar lost, counted against the dataset's
index) travels with a batch as ``batch["skipped"]``, and the count per shard as
``batch["skipped_shards"]``, so the main process can log them and name bad shards, whatever the
number of worker processes.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from .decode import ShardMismatchError
from .shards import expected_samples

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
    """Counts and reports skipped samples, per shard, inside one worker process.

    As a webdataset handler it counts one skip per sample that fails to decode; :meth:`lost` counts the
    samples a damaged shard did not deliver. Errors that mean the data is wrong as a whole rather than
    one sample being bad (``fatal``, e.g. image and embedding shards that do not mirror each other) are
    re-raised.
    """

    fatal: tuple[type[BaseException], ...] = (ShardMismatchError,)

    def __init__(self) -> None:
        self.shards: Counter[str] = Counter()
        self.taken = 0  # samples taken from the shards, read or lost

    def __call__(self, error: BaseException) -> bool:
        if isinstance(error, self.fatal):
            raise error
        self.shards[str(getattr(error, "shard_url", None) or "?")] += 1
        log.warning("skipping: %s", error)
        return True

    def lost(self, url: str, read: int, expected: int | None, errors: list[BaseException]) -> None:
        """Count what shard ``url`` lost: ``expected - read`` samples where its dataset index records how
        many it holds, else one per read error (a lower bound: the rest of the tar is unreadable)."""
        missing = expected - read if expected is not None else len(errors)
        why = re.sub(r" @ <[^>]*>", "", f"{type(errors[0]).__name__}: {errors[0]}") if errors else "the tar ends early"
        if missing <= 0:
            if errors:
                log.warning("%s: read error after all of its samples (%s)", url, why)
            return
        self.shards[url] += missing
        self.taken += missing
        if expected is None:
            told = f"{read} samples read; its index.json records no count, so {missing} counted (at least that many lost)"
        else:
            told = f"{read} of its {expected} samples read, {missing} counted as skipped"
        log.warning("shard %s is damaged (%s): %s", url, why, told)

    def take(self) -> dict[str, Any]:
        """The counts since the last call, as batch entries (Python ints, so that reading them never waits on
        the device the batch was moved to): ``skipped``, ``skipped_shards`` (``shard -> skips``) and
        ``shard_samples``, the samples taken from the shards, read or lost. A skip rate is ``skipped /
        shard_samples``: both count at the shards, while a batch's own examples leave a shuffle buffer
        that read ahead."""
        shards, self.shards = self.shards, Counter()
        taken, self.taken = self.taken, 0
        return {"skipped": sum(shards.values()), "skipped_shards": dict(shards), "shard_samples": taken}


def _collect(errors: list[BaseException]) -> Callable[[BaseException], bool]:
    def handler(error: BaseException) -> bool:
        errors.append(error)
        return True

    return handler


def shard_samples(shards: Iterable[dict], counter: SkipCounter, expected: dict[str, int]) -> Iterator[dict]:
    """Tar shards (``{"url": ...}``) -> samples, counting into ``counter`` what each damaged shard lost.

    webdataset stops reading a tar at its damage and reports one error however many samples lay behind
    it, and a tar cut at a member boundary reports none. So each shard's samples are counted against
    ``expected`` (``url -> samples``, from the dataset's index: :func:`~.shards.expected_samples`), and
    the shortfall is counted as skipped samples of that shard.
    """
    for shard in shards:
        errors: list[BaseException] = []
        read = 0
        for sample in wds.tarfile_to_samples(handler=_collect(errors))([shard]):
            read += 1
            counter.taken += 1
            yield sample
        url = shard["url"]
        if errors or read < expected.get(url, 0):
            counter.lost(url, read, expected.get(url), errors)


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
    expected = expected_samples(shards.urls)
    stages: list = [shards, functools.partial(shard_samples, counter=counter, expected=expected)]
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
        expected = expected_samples(self.urls)
        for url in share(share(self.urls, self.rank, self.world_size), worker, workers):
            counter = SkipCounter()
            samples = wds.DataPipeline(
                wds.SimpleShardList([url]),
                functools.partial(shard_samples, counter=counter, expected=expected),
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
