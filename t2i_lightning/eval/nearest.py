"""Nearest validation samples of an embedding: a quick look at what a translated embedding means."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.embeddings import IMAGE_MEMBER, load_npy, read_stats
from ..data.inspect import read_samples
from ..data.shards import resolve_shards


def load_split_embeddings(
    emb_dir: str | os.PathLike, split: str = "val"
) -> tuple[list[str], torch.Tensor, list[str]]:
    """Keys, image embeddings (float32) and captions of one split of an embedding directory.

    Captions come from the image shards the embeddings mirror (``stats.json``'s ``source``).
    """
    keys, images = [], []
    for shard in resolve_shards(str(emb_dir), split):
        for sample in read_samples(shard):
            keys.append(sample["__key__"])
            images.append(load_npy(sample[IMAGE_MEMBER]).astype(np.float32))
    captions: dict[str, str] = {}
    source = read_stats(emb_dir).get("source")
    for shard in resolve_shards(source, split) if source and Path(source).is_dir() else []:
        for sample in read_samples(shard):
            captions[sample["__key__"]] = sample.get("txt", b"").decode("utf-8", errors="replace").strip()
    return keys, torch.from_numpy(np.stack(images)), [captions.get(k, "(caption not found)") for k in keys]


def nearest(query: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices of the ``k`` rows of ``bank`` nearest to each query row."""
    similarity = F.normalize(query.float(), dim=-1) @ F.normalize(bank.float(), dim=-1).T
    return similarity.topk(min(k, bank.shape[0]), dim=-1)
