"""A randomly initialised open_clip model written to a local weights file, marked as such.

The real-data path check (``make demo-real`` without ``CLIP=``) needs a CLIP of a pretrained architecture
(ViT-B-32) where no pretrained weights can be downloaded. Its weights are random, so every embedding and
every number made from them is a check that the path runs, not a result; the file says so in its
safetensors metadata (:data:`RANDOM_INIT_KEY`), and the evaluation table reads it back and says so too.
"""

from __future__ import annotations

import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..data.shards import atomic_path
from .clip import create_clip

RANDOM_INIT_KEY = "t2i_random_init"
"""Metadata key of a weights file written by :func:`save_random_clip`; its value is the model and seed."""


def save_random_clip(model_name: str, path: str | os.PathLike, seed: int = 0) -> str:
    """Write a randomly initialised ``model_name`` (seeded) to ``path`` as safetensors, atomically; returns the path."""
    torch.manual_seed(seed)
    # cloned: safetensors refuses tensors that share memory (the project's CNN tower names one conv twice)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in create_clip(model_name).state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={RANDOM_INIT_KEY: f"{model_name} seed {seed}", "format": "pt"})
    return str(path)


def random_init_of(path: str | os.PathLike | None) -> str | None:
    """What :func:`save_random_clip` recorded in ``path`` ("ViT-B-32 seed 0"), or None for any other file
    (trained or pretrained weights, a checkpoint, a tag, nothing)."""
    if not path or not str(path).endswith(".safetensors") or not os.path.isfile(path):
        return None
    with safe_open(str(path), framework="pt") as weights:
        return (weights.metadata() or {}).get(RANDOM_INIT_KEY)
