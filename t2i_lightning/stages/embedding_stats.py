"""Stages trained on one CLIP's embeddings: standardisation buffers and the CLIP's identity.

The per-dimension mean/std of an embedding directory's ``stats.json`` become buffers of the
stage (so its checkpoint alone standardises new embeddings), and the identity of the CLIP that
made them is saved in the checkpoint (so a chain can refuse a CLIP, or another stage, trained on
other embeddings).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from ..data.embeddings import read_stats

CLIP_IDENTITY_KEYS = ("model", "pretrained", "checkpoint_sha256", "clip_id")


class EmbeddingStatsMixin:
    """For an ``nn.Module`` (a stage or a conditioning) given a ``stats`` path; call :meth:`init_embedding_stats`
    in ``__init__`` after the buffers exist, and implement ``load_stats(stats)`` (calling :meth:`copy_stats`)."""

    def init_embedding_stats(self, stats: str | None, sides: dict[str, int]) -> None:
        """Register ``mean_<side>``/``std_<side>`` buffers of the given dims and load ``stats`` if it exists."""
        for side, dim in sides.items():
            self.register_buffer(f"mean_{side}", torch.zeros(dim))
            self.register_buffer(f"std_{side}", torch.ones(dim))
        self.stats_path = stats
        self.clip_identity: dict[str, Any] = {}
        self.stats_loaded = False
        if stats is not None and os.path.isfile(stats):
            self.load_stats(read_stats(os.path.dirname(stats) or "."))
        elif stats is not None:
            warnings.warn(
                f"{type(self).__name__}: stats file not found: {stats} (fine when loading a checkpoint)",
                stacklevel=3,
            )

    def copy_stats(self, stats: dict, sides: tuple[str, ...]) -> None:
        """Copy ``stats.json``'s mean/std of ``sides`` into the buffers and remember the CLIP."""
        for side in sides:
            getattr(self, f"mean_{side}").copy_(torch.tensor(stats[f"mean_{side}"], dtype=torch.float32))
            getattr(self, f"std_{side}").copy_(torch.tensor(stats[f"std_{side}"], dtype=torch.float32))
        self.clip_identity = {k: stats.get(k) for k in CLIP_IDENTITY_KEYS}
        self.stats_loaded = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["clip_identity"] = self.clip_identity

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.clip_identity = checkpoint.get("clip_identity", {})
        self.stats_loaded = True

    def on_fit_start(self) -> None:
        if not self.stats_loaded:
            raise FileNotFoundError(
                f"{type(self).__name__} needs the embeddings' stats.json (stats = {self.stats_path})"
            )
