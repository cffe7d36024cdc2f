"""The decoder's U-Net with the CLIP image embedding also given as extra context tokens (DALL-E 2).

unCLIP's decoder (Ramesh et al. 2022, sec. 2.1) conditions GLIDE on the CLIP image embedding in two
ways: "projecting and adding CLIP embeddings to the existing timestep embedding, and by projecting
CLIP embeddings into four extra tokens of context" that the attention layers attend to. The study's
decoder (:class:`~t2i_lightning.nn.unet.ConditionalUNet`) does only the first. Here the embedding
is projected by one linear map into ``num_tokens`` tokens, which the GLIDE-style attention blocks of
:class:`~t2i_lightning.nn.text_unet.TextConditionalUNet` attend to (keys and values are the tokens
and the image positions in one softmax), and is also its pooled input (added to the timestep
embedding). So each attended position can read a different part of the embedding, where the
scale-shift conditioning gives every position the same vector.
"""

from __future__ import annotations

import torch
from torch import nn

from .text_unet import TextConditionalUNet


class EmbeddingTokenUNet(nn.Module):
    """``net(x, t, cond) -> output`` with ``cond`` a B x ``cond_dim`` vector, as
    :class:`~t2i_lightning.nn.unet.ConditionalUNet` takes, so :class:`DiffusionStage` uses either.

    Args: as :class:`~t2i_lightning.nn.unet.ConditionalUNet` (``attention_resolutions`` get self- and
    cross-attention; the middle block always has both), plus
        num_tokens: context tokens projected from the embedding (DALL-E 2: four).
        token_dim: width of each token (default: ``cond_dim``).
    """

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16, 8),
        head_channels: int = 32,
        dropout: float = 0.0,
        cond_dim: int = 256,
        num_tokens: int = 4,
        token_dim: int | None = None,
        learn_variance: bool = True,
        groups: int = 32,
        patch_size: int = 1,
    ):
        super().__init__()
        if cond_dim <= 0 or num_tokens <= 0:
            raise ValueError(f"cond_dim and num_tokens must be positive, got {cond_dim} and {num_tokens}")
        token_dim = token_dim or cond_dim
        self.image_size, self.in_channels, self.cond_dim = image_size, in_channels, cond_dim
        self.learn_variance = learn_variance
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.to_tokens = nn.Linear(cond_dim, num_tokens * token_dim)
        self.net = TextConditionalUNet(
            image_size, in_channels, base_channels, channel_mult, num_res_blocks, attention_resolutions,
            head_channels, dropout, token_dim=token_dim, pooled_dim=cond_dim, learn_variance=learn_variance,
            groups=groups, patch_size=patch_size,
        )  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if not isinstance(cond, torch.Tensor) or cond.dim() != 2 or cond.shape[-1] != self.cond_dim:
            shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"This U-Net takes cond of shape (batch, {self.cond_dim}), got {shape}")
        cond = cond.to(x.dtype)
        tokens = self.to_tokens(cond).view(len(cond), self.num_tokens, self.token_dim)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return self.net(x, t, {"tokens": tokens, "mask": mask, "pooled": cond})
