"""Input pipeline throughput: the decoder's DataModule read alone, to compare with what training consumes.

The decoder's own DataModule (``ImageEmbeddingDataModule``: shards read, shuffled, PNGs decoded and
resized once per sample, embeddings joined by key) with the stage config's batch size and workers,
iterated without a model. Where the embeddings are not extracted yet (a fresh clone) the image-only
``ShardDataModule`` is read instead, which does the same decoding without the join; the result
says which one was measured.
"""

from __future__ import annotations

import os
import time

from ..data.datamodule import ShardDataModule
from ..data.joined import ImageEmbeddingDataModule
from .stage_config import stage_config_section


def bench_input(config: str = "stages/decoder.yaml", data: str | None = None, batches: int = 40,
                num_workers: int | None = None) -> dict:  # fmt: skip
    """Samples/s of the training dataloader of ``config``'s data over ``batches`` batches (after the first,
    which includes starting the workers)."""
    args = dict(stage_config_section(config, "data", "init_args"))
    if data is not None:
        args["train"] = args["val"] = data
    if num_workers is not None:
        args["num_workers"] = num_workers
    embeddings = args.pop("embeddings", None)
    joined = embeddings is not None and os.path.isfile(os.path.join(embeddings, "stats.json"))
    datamodule = ImageEmbeddingDataModule(embeddings, **args) if joined else ShardDataModule(**args)
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start = time.perf_counter()
    samples = sum(len(next(loader)["key"]) for _ in range(batches))
    elapsed = time.perf_counter() - start
    return {
        "datamodule": type(datamodule).__name__,
        "embeddings_joined": joined,
        "batch_size": args["batch_size"],
        "num_workers": args["num_workers"],
        "samples": samples,
        "samples_per_s": samples / elapsed,
    }
