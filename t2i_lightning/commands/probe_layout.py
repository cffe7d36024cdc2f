"""``t2i probe-layout``: how much of a shapes scene (objects per cell, their colours, the background)
the CLIP image embeddings of a dataset hold, by linear probes trained on train and scored on val.

    t2i probe-layout --emb data/shapes/emb-shapes-cnn-tiny --out runs/clip/layout_probe.json
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..registry import DEMO_EMBEDDINGS
from .options import options_from


@dataclass(frozen=True, kw_only=True)
class ProbeLayoutOptions:
    emb: str
    steps: int
    out: str | None


def register(subparsers: argparse._SubParsersAction) -> None:
    probe = subparsers.add_parser(
        "probe-layout",
        help="how much of a shapes scene (objects per cell, their colours, the background) CLIP image embeddings hold",
    )
    probe.add_argument("--emb", default=DEMO_EMBEDDINGS, help=f"embedding directory (default: {DEMO_EMBEDDINGS})")
    probe.add_argument("--steps", type=int, default=300, help="full-batch Adam steps of the linear probe (default: 300)")
    probe.add_argument("--out", default=None, help="also write the scores to this JSON file")
    probe.set_defaults(run=lambda args: run(options_from(ProbeLayoutOptions, args)))


def run(options: ProbeLayoutOptions) -> None:
    from ..data.shards import write_json_atomic
    from ..eval.layout_probe import probe_embedding_dir

    if options.steps <= 0:
        raise ValueError(f"--steps must be positive, got {options.steps}")
    scores = probe_embedding_dir(options.emb, steps=options.steps)
    print(f"Linear probe on the image embeddings in {options.emb} (trained on train, scored on val; L2 {scores['weight_decay']:g}):")
    print(f"{'what':<18}{'probe':>8}{'baseline':>10}")
    for name in ("occupancy", "slot_occupied", "colour_occupied", "background"):
        print(f"{name:<18}{scores[name]:>8.3f}{scores[name + '_baseline']:>10.3f}")
    if options.out:
        write_json_atomic(options.out, {"emb": str(options.emb), "steps": options.steps, **scores})
