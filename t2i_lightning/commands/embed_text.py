"""``t2i embed-text``: translate captions to CLIP image embeddings and show the nearest validation
images' captions (a quick look at what the translator makes of a caption).

    t2i embed-text "a red circle" --translator TRANSLATOR.ckpt --k 5
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import default_checkpoint
from .options import add_command, add_device_arguments, options_from

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class EmbedTextOptions:
    prompts: list[str]
    translator: str
    clip: str | None
    emb: str | None
    k: int
    device: torch.device


def register(subparsers: argparse._SubParsersAction) -> None:
    embed_text = add_command(subparsers, "embed-text", __doc__, help="translate captions to CLIP image embeddings and show the nearest validation images' captions")
    embed_text.add_argument("prompts", nargs="+", help="one or more captions")
    embed_text.add_argument("--translator", default=default_checkpoint("translator"), help="translator checkpoint")
    embed_text.add_argument(
        "--clip", default=None, help="CLIP checkpoint or weights (default: the one the translator recorded)"
    )
    embed_text.add_argument(
        "--emb", default=None, help="embedding directory to search (default: the translator's)"
    )
    embed_text.add_argument("--k", type=int, default=5, help="neighbours to show (default: 5)")
    add_device_arguments(embed_text, precision=False)
    embed_text.set_defaults(run=lambda args: run(options_from(EmbedTextOptions, args)))


def run(options: EmbedTextOptions) -> None:
    import torch

    from ..eval.nearest import load_split_embeddings, nearest
    from ..pipeline import TextToImageEmbedding

    if options.k <= 0:
        raise ValueError(f"--k must be positive, got {options.k}")
    chain = TextToImageEmbedding.from_checkpoints(options.translator, options.clip, device=options.device)
    embeddings = chain(options.prompts).cpu()
    texts = chain.text_embeddings(options.prompts).cpu()
    emb_dir = options.emb or os.path.dirname(chain.translator.hparams.stats or "")
    keys, bank, captions = load_split_embeddings(emb_dir, "val")
    scores, indices = nearest(embeddings, bank, options.k)
    for prompt, emb, text, row_scores, row in zip(
        options.prompts, embeddings, texts, scores, indices, strict=True
    ):
        cosine = float(torch.nn.functional.cosine_similarity(emb, text, dim=0))
        print(f"{prompt!r}: image embedding norm {emb.norm():.3f}, cosine to its text embedding {cosine:.3f}")
        print(f"  nearest of {len(keys)} validation images ({emb_dir}):")
        for score, i in zip(row_scores.tolist(), row.tolist(), strict=True):
            print(f"    {score:.3f}  {keys[i]}: {captions[i]}")
