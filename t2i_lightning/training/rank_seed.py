"""Per-rank random streams for data-parallel training.

``seed_everything`` (``seed_everything: 0`` in ``stages/_trainer.yaml``) seeds every rank alike: the
initial weights need that, but afterwards every GPU would draw the same timesteps, the same noise and
the same classifier-free-guidance drop masks for its own images, so N ranks would explore no more
noise than one. :class:`RankSeeds` re-seeds torch's generators (CPU and every CUDA device) when
training starts, from the configured seed and the rank (numpy's ``SeedSequence``, so nearby seeds and
ranks give unrelated streams). Data sharding does not use these generators and is unchanged. A
single-process run is left as it is, so its results do not change.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s stream in a run seeded with ``seed`` (63 bits, from ``SeedSequence([seed, rank])``)."""
    return int(np.random.SeedSequence([seed % 2**64, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class RankSeeds(pl.Callback):
    """Give each rank of a multi-process run its own random stream from the start of training."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            torch.manual_seed(rank_seed(torch.initial_seed(), trainer.global_rank))
