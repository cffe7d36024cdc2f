"""The translator network: a residual MLP from CLIP text embeddings to CLIP image embeddings.

As in the unCLIP-lite study (its "prior" replaced by a deterministic regressor): an input
projection, ``depth`` pre-norm residual blocks ``x + W2 Dropout(GELU(W1 LayerNorm(x)))``, a
final LayerNorm and an output projection.
"""

from __future__ import annotations

import torch
from torch import nn


class PreNormResidualBlock(nn.Module):
    """``x + Linear(Dropout(GELU(Linear(LayerNorm(x)))))``."""

    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualMLP(nn.Module):
    """Input projection, ``depth`` pre-norm residual blocks, final LayerNorm and output projection.

    Args:
        in_dim: text embedding size. out_dim: image embedding size.
        width: residual stream width. depth: number of blocks (the study's config: 30 at 512).
        hidden_mult: hidden width of each block relative to ``width``. dropout: inside blocks.
    """

    def __init__(
        self, in_dim: int = 256, out_dim: int = 256, width: int = 512, depth: int = 4, hidden_mult: int = 2,
        dropout: float = 0.1,
    ):  # fmt: skip
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.input = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(
            *(PreNormResidualBlock(width, hidden_mult * width, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(self.blocks(self.input(x))))
