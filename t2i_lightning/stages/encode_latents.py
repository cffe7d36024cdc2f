"""Latent extraction (``t2i predict --config stages/encode_latents.yaml``, ``make encode-latents``).

The trained autoencoder (its EMA weights) encodes every image to its posterior mean, and
:class:`~t2i_lightning.data.mirror_writer.MirrorShardWriter` writes the latents (``KEY.latent.npy``,
float16, C x H/f x W/f) as shards that mirror the image shards, with the contract of the embedding
shards: resumable and byte-identical on resume, split across ranks, each shard's source image shard
recorded, and ``stats.json`` naming the autoencoder checkpoint (its tensors' digest) that made them and
the ``scale_factor`` that brings the latents to unit variance (Rombach et al. 2022, §4.3.2: the latents
are rescaled by 1/σ of the training latents before diffusion).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from ..data.embeddings import Moments
from ..data.latents import LATENT_MEMBER, latent_dir
from ..data.mirror_writer import MirrorExtraction, MirrorShardWriter
from ..registry import default_checkpoint
from ..training.checkpoint_io import read_checkpoint
from ..training.stage_loading import load_frozen_stage

DEFAULT_AUTOENCODER = default_checkpoint("autoencoder")


def autoencoder_identity(path: str) -> dict:
    """What names an autoencoder checkpoint wherever it lies: its tensors' digest (recorded at save) and
    the sizes that shape its latents."""
    from ..training.checkpoint_io import INTEGRITY_KEY

    checkpoint = read_checkpoint(path)
    net = (checkpoint.get("hyper_parameters") or {}).get("net", {}).get("init_args", {})
    return {
        "model": "autoencoder",
        "pretrained": str(path),
        "autoencoder_digest": checkpoint.get(INTEGRITY_KEY),
        "latent_channels": net.get("latent_channels"),
    }


class LatentEncodeStage(MirrorExtraction, pl.LightningModule):
    """Args:
    autoencoder: the autoencoder stage's checkpoint (default: the one ``make train-autoencoder`` writes).
    out: output directory; default ``<dataset>/latents`` beside the images.
    replace_other_autoencoder: when ``out`` holds latents of another autoencoder, delete them and encode
        anew (default: refuse). Latents of the same autoencoder are always resumed.
    """

    members = {"latent": LATENT_MEMBER}
    what = "latents"
    maker = "autoencoder"
    replace_option = "model.init_args.replace_other_autoencoder"

    def __init__(self, autoencoder: str = DEFAULT_AUTOENCODER, out: str | None = None, replace_other_autoencoder: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.autoencoder = load_frozen_stage(autoencoder, "autoencoder")
        self.identity = autoencoder_identity(autoencoder)

    @property
    def replace_other(self) -> bool:
        return self.hparams.replace_other_autoencoder

    def same_maker(self, recorded: dict) -> bool:
        """The same autoencoder weights, wherever the checkpoint lies."""
        return recorded.get("autoencoder_digest") == self.identity["autoencoder_digest"]

    def output_dir(self, dataset_dir: str | os.PathLike) -> Path:
        return Path(self.hparams.out) if self.hparams.out else latent_dir(dataset_dir)

    def stats(self, moments: dict[str, Moments]) -> dict:
        """The latents' shape, their mean and standard deviation over every value, and ``scale_factor`` = 1/σ."""
        part = moments["latent"]
        variance = part.m2 / part.count  # per value position
        mean = float(part.mean.mean())
        std = float(np.sqrt(variance.mean() + ((part.mean - mean) ** 2).mean()))  # the law of total variance
        net = self.autoencoder.net
        return {
            "shape": [net.latent_channels, net.latent_size, net.latent_size],
            "factor": net.factor,
            "mean": mean,
            "std": std,
            "scale_factor": 1.0 / std,
        }

    def configure_callbacks(self) -> list[pl.Callback]:
        return [MirrorShardWriter()]

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        size, trained = getattr(datamodule, "hparams", {}).get("image_size"), self.autoencoder.net.image_size
        if size is not None and size != trained:
            raise ValueError(
                f"The autoencoder was trained on {trained}px images but the data are read at {size}px: pass "
                f"--data.init_args.image_size {trained}"
            )

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if not batch["key"]:
            return {"key": [], "latent": None}
        return {"key": batch["key"], "latent": self.autoencoder.encode_latents(batch["image"]).float().cpu()}
