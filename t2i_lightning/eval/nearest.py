"""Nearest samples of an embedding: a quick look at what a translated embedding means, and the
training image an image embedding is nearest to (the reference row of ``t2i evaluate-decoder``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ..data.decode import decode_image_caption
from ..data.embeddings import IMAGE_MEMBER, load_npy, read_stats
from ..data.inspect import read_samples
from ..data.shards import resolve_shards

T = TypeVar("T")


def split_image_embeddings(emb_dir: str | os.PathLike, split: str = "val") -> tuple[list[str], torch.Tensor]:
    """Keys and image embeddings (float32, N x D) of one split of an embedding directory."""
    keys, images = [], []
    for shard in resolve_shards(str(emb_dir), split):
        for sample in read_samples(shard):
            keys.append(sample["__key__"])
            images.append(load_npy(sample[IMAGE_MEMBER]).astype(np.float32))
    return keys, torch.from_numpy(np.stack(images)) if images else torch.empty(0, 0)


def source_fields(emb_dir: str | os.PathLike, split: str, keys: list[str], read: Callable[[dict], T], missing: T) -> list[T]:
    """``read(sample)`` for each key's sample in the image shards the embeddings mirror (``stats.json``'s
    ``source``), or ``missing`` where the key (or the source) is not found."""
    found: dict[str, T] = {}
    wanted = set(keys)
    source = read_stats(emb_dir).get("source")
    for shard in resolve_shards(source, split) if source and Path(source).is_dir() else []:
        for sample in read_samples(shard):
            if sample["__key__"] in wanted:
                found[sample["__key__"]] = read(sample)
    return [found.get(key, missing) for key in keys]


def load_split_embeddings(
    emb_dir: str | os.PathLike, split: str = "val"
) -> tuple[list[str], torch.Tensor, list[str]]:
    """Keys, image embeddings (float32) and captions of one split of an embedding directory."""
    keys, images = split_image_embeddings(emb_dir, split)
    captions = source_fields(
        emb_dir, split, keys, lambda s: s.get("txt", b"").decode("utf-8", errors="replace").strip(), "(caption not found)"
    )
    return keys, images, captions


def nearest(query: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices of the ``k`` rows of ``bank`` nearest to each query row."""
    similarity = F.normalize(query.float(), dim=-1) @ F.normalize(bank.float(), dim=-1).T
    return similarity.topk(min(k, bank.shape[0]), dim=-1)


def has_train_split(emb_dir: str | os.PathLike) -> bool:
    return any(Path(emb_dir).glob("train-*.tar"))


def nearest_training_images(
    emb_dir: str | os.PathLike, queries: torch.Tensor, image_size: int
) -> tuple[torch.Tensor, list[str]]:
    """For each query image embedding, the training image whose CLIP image embedding is nearest to it
    (cosine), at ``image_size`` in [-1, 1], and its key. Scored as if it were a reconstruction, it says
    what the embedding alone tells apart: a real image that CLIP finds closest, drawn perfectly
    (unCLIP's decoder can at best put back what the embedding holds; Ramesh et al. 2022, sec. 3.1)."""
    if not has_train_split(emb_dir):  # resolve_shards would fall back to every shard, the sources' own too
        raise ValueError(f"{emb_dir} has no train split embeddings (train-*.tar) to search")
    keys, bank = split_image_embeddings(emb_dir, "train")
    _, index = nearest(queries, bank, 1)
    chosen = [keys[i] for i in index[:, 0].tolist()]
    images = source_fields(emb_dir, "train", chosen, lambda sample: decode_image_caption(sample, image_size)["image"], None)
    if any(image is None for image in images):
        raise ValueError(f"the train images of {emb_dir} (its stats.json 'source') are missing some nearest keys")
    return torch.stack(images), chosen
