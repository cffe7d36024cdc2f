"""Caption words predicted from CLIP embeddings: an auxiliary loss beside the contrastive one.

A contrastive loss only needs what tells a batch's pairs apart. On shapes, colours, counts,
positions and backgrounds already do, so the kind of a ~10-pixel object is never needed and the
embeddings learn it last (feature suppression). SuperClass (Huang et al. 2024, "Classification
Done Right for Vision-Language Pre-Training", sec. 3) trains an image tower to classify the
caption's subword tokens, each present token a target: softmax cross-entropy against the
normalised multi-hot vector over the tokenizer's vocabulary (their eq. 2, here without the IDF
weights). Here one linear head reads the words from *both* embeddings, the image's and the
caption's, so a word is read from the same directions of the shared space on either side, and
every word of the caption, the kind included, has to be present in the image embedding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class CaptionWordHead(nn.Module):
    """``head.loss(features, tokens)``: mean cross-entropy between the words predicted from unit-norm
    embeddings and each caption's bag of token ids.

    Args:
        dim: embedding width.
        vocab_size: the tokenizer's vocabulary size.
        ignored_ids: token ids that are not words (padding, start and end of text).
    """

    def __init__(self, dim: int, vocab_size: int, ignored_ids: Iterable[int]):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)
        # unit-norm embeddings scaled to unit mean square per coordinate, the scale a linear layer's
        # default initialisation expects (a softmax over ~50k words from unit-norm inputs is flat)
        self.input_scale = math.sqrt(dim)
        self.register_buffer("ignored_ids", torch.tensor(sorted(set(ignored_ids)), dtype=torch.long), persistent=False)

    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, vocab) the caption's distinct words, each with weight 1 / their count."""
        bag = torch.zeros(tokens.shape[0], self.proj.out_features, device=tokens.device)
        bag.scatter_(1, tokens, 1.0)
        bag[:, self.ignored_ids] = 0.0
        count = bag.sum(dim=1, keepdim=True)
        if bool((count == 0).any()):
            raise ValueError("a caption has no word tokens (empty caption?)")
        return bag / count

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.proj(features * self.input_scale), targets)
