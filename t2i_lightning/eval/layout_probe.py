"""How much of a shapes scene a CLIP embedding holds: linear probes from the embedding to the scene.

A decoder conditioned only on the CLIP image embedding can put back what the embedding holds and
nothing more (Ramesh et al. 2022, sec. 3.1 and fig. 7: unCLIP's reconstructions keep what CLIP
encodes, and lose what it does not). A linear probe (Alain & Bengio 2016) trained on the embeddings
of the training split to read the judge's targets (:func:`~t2i_lightning.metrics.scene_labels.scene_targets`:
per cell of the 3x3 grid, empty or the object's kind; the object's colour; the background colour)
and scored on the validation split says how much of the layout is there to decode. Each score sits
beside the baseline that reads nothing (the most frequent class), so "above the baseline" is what
the embedding adds.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from ..data.embeddings import read_stats
from ..metrics.scene_labels import CELLS, COLOUR_NAMES, EMPTY, IGNORE, SLOT_CLASSES, scene_targets
from ..registry import make_command
from .nearest import source_fields, split_image_embeddings

HEADS = {"slot": CELLS * len(SLOT_CLASSES), "colour": CELLS * len(COLOUR_NAMES), "background": len(COLOUR_NAMES)}


def _logits(probe: torch.nn.Linear, x: torch.Tensor) -> dict[str, torch.Tensor]:
    parts = probe(x).split(list(HEADS.values()), dim=-1)
    logits = dict(zip(HEADS, parts, strict=True))
    logits["slot"] = logits["slot"].reshape(len(x), CELLS, len(SLOT_CLASSES))
    logits["colour"] = logits["colour"].reshape(len(x), CELLS, len(COLOUR_NAMES))
    return logits


def _loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(
        F.cross_entropy(logits[name].reshape(-1, logits[name].shape[-1]), targets[name].reshape(-1), ignore_index=IGNORE)
        for name in HEADS
    )


def _majority(values: torch.Tensor) -> torch.Tensor:
    return torch.bincount(values[values != IGNORE]).argmax()


def _fit(x: torch.Tensor, targets: dict[str, torch.Tensor], steps: int, weight_decay: float, seed: int) -> torch.nn.Linear:
    """One linear map to every head, full batch, Adam with an L2 penalty ``weight_decay``."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], sum(HEADS.values()))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        _loss(_logits(probe, x), targets).backward()
        optimizer.step()
    return probe


def _subset(targets: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: values[rows] for name, values in targets.items()}


def probe_layout(
    train: torch.Tensor, train_metas: list[dict], val: torch.Tensor, val_metas: list[dict], steps: int = 300,
    weight_decays: tuple[float, ...] = (0.0, 1e-3, 1e-2, 3e-2), seed: int = 0,
) -> dict[str, float]:
    """Fit one linear map from standardised embeddings to every head on ``train`` (full batch, Adam,
    ``steps`` steps) and score it on ``val``. The L2 penalty is chosen among ``weight_decays`` by the
    loss on a fifth of ``train`` held out from the fit, then the probe is refitted on all of ``train``:
    unpenalised, a probe memorises the training split through rare dimensions (0.36 instead of 0.99
    on the background of a noisy one-hot code), and too large a penalty reads every cell as empty.
    Returns the chosen ``weight_decay`` and, each with its ``*_baseline`` (the training split's most
    frequent class, read without the embedding):

    - ``occupancy``: per cell, whether the probe's slot says empty when the cell is empty;
    - ``slot_occupied``: the kind, on the occupied cells;
    - ``colour_occupied``: the object's colour, on the occupied cells;
    - ``background``: the background colour.
    """
    if len(train) != len(train_metas) or len(val) != len(val_metas) or len(train) < 5 or not len(val):
        raise ValueError("Need as many embeddings as metadata entries, in both splits, at least 5 to train on and 1 to score")
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, val = (train - mean) / std, (val - mean) / std
    train_targets, val_targets = scene_targets(train_metas), scene_targets(val_metas)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    held, fit = order[: len(train) // 5], order[len(train) // 5 :]

    def held_out_loss(weight_decay: float) -> float:
        probe = _fit(train[fit], _subset(train_targets, fit), steps, weight_decay, seed)
        with torch.no_grad():
            return _loss(_logits(probe, train[held]), _subset(train_targets, held)).item()

    weight_decay = min(weight_decays, key=held_out_loss)
    probe = _fit(train, train_targets, steps, weight_decay, seed)
    with torch.no_grad():
        predicted = {name: logits.argmax(-1) for name, logits in _logits(probe, val).items()}
    occupied = val_targets["slot"] != EMPTY
    majority = {name: _majority(train_targets[name]) for name in HEADS}
    majority_slot_occupied = _majority(train_targets["slot"][train_targets["slot"] != EMPTY])

    def rate(hits: torch.Tensor) -> float:
        return hits.float().mean().item() if hits.numel() else float("nan")

    return {
        "weight_decay": weight_decay,
        "occupancy": rate((predicted["slot"] != EMPTY) == occupied),
        "occupancy_baseline": rate((majority["slot"] != EMPTY) == occupied),
        "slot_occupied": rate(predicted["slot"][occupied] == val_targets["slot"][occupied]),
        "slot_occupied_baseline": rate(val_targets["slot"][occupied] == majority_slot_occupied),
        "colour_occupied": rate(predicted["colour"][occupied] == val_targets["colour"][occupied]),
        "colour_occupied_baseline": rate(val_targets["colour"][occupied] == majority["colour"]),
        "background": rate(predicted["background"] == val_targets["background"]),
        "background_baseline": rate(val_targets["background"] == majority["background"]),
    }


def probe_embedding_dir(emb_dir: str | os.PathLike, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """:func:`probe_layout` on the image embeddings of an embedding directory's train and val splits,
    with the scene metadata of the shapes shards they mirror."""
    read_stats(emb_dir)  # an embedding directory, not image shards: says so otherwise
    splits = {}
    for split in ("train", "val"):
        keys, embeddings = split_image_embeddings(emb_dir, split)
        if not keys:
            raise ValueError(f"No {split} embeddings in '{emb_dir}': extract them first ({make_command('embed')})")
        metas = source_fields(emb_dir, split, keys, lambda s: json.loads(s.get("json", b"{}")), {})
        if not all("objects" in meta for meta in metas):
            raise ValueError(f"The layout probe needs shapes scene metadata; '{emb_dir}' mirrors shards without it")
        splits[split] = (embeddings, metas)
    return probe_layout(*splits["train"], *splits["val"], steps=steps, seed=seed)
