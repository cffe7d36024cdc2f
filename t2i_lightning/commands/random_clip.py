"""``t2i random-clip``: a randomly initialised open_clip model of a pretrained architecture, written to a
local safetensors file marked as random (:mod:`t2i_lightning.nn.random_clip`), for a path check of the
pretrained-CLIP route where no weights are at hand (what ``make demo-real`` does without ``CLIP=``).

    t2i random-clip --model ViT-B-32 --out runs/real/clip/ViT-B-32-random.safetensors [--seed 0]

Its embeddings carry nothing of the images: every number made from them checks that the path runs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .options import add_command, options_from


@dataclass(frozen=True, kw_only=True)
class RandomClipOptions:
    model: str
    out: str
    seed: int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "random-clip", __doc__, help="write a randomly initialised open_clip model (a path check, marked so)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (default: ViT-B-32)")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    parser.set_defaults(run=lambda args: run(options_from(RandomClipOptions, args)))


def run(options: RandomClipOptions) -> None:
    from ..data.shards import check_writable
    from ..nn.random_clip import save_random_clip

    if not options.out.endswith(".safetensors"):
        raise ValueError(f"--out must name a .safetensors file, got {options.out}")
    check_writable(options.out)
    path = save_random_clip(options.model, options.out, options.seed)
    print(f"RANDOM {options.model} weights (seed {options.seed}) -> {path}: a path check, its embeddings mean nothing")
