"""The text-conditioned U-Net of the Imagen-like decoder, built from diffusers' ``UNet2DConditionModel``.

Imagen's 64px base model (Saharia et al. 2022, sec. 2.5, "Neural network architecture") is the
improved-DDPM/ADM U-Net (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021) conditioned on text in two
ways:
- a pooled text embedding added to the timestep embedding, as a class embedding is in ADM
  (diffusers' ``class_embed_type="projection"``: an MLP from ``pooled_dim`` to the timestep
  embedding's width, its output added to it);
- cross-attention over the whole token sequence at the low resolutions. The blocks are the
  GLIDE/ADM attention blocks (``SimpleCrossAttn*Block2D``): each attention layer's keys and values
  are the projected text tokens concatenated with the image positions (Nichol et al. 2022, GLIDE
  sec. 2.3), so self- and cross-attention share one softmax. ``encoder_attention_mask`` turns the
  padded tokens into a -10000 bias, so they get no weight at all.
Text embeddings are layer-normalised (per token, so padding cannot leak in) before attention and
pooling (Imagen sec. 2.5 found this helps considerably); one LayerNorm for the tokens is shared by
every attention layer (diffusers' own ``cross_attention_norm`` does not fit the added-KV blocks). The rest is ``nn/unet.py``'s ADM U-Net: scale-shift timestep conditioning
(AdaGN), residual up/down-sampling, learned variance as extra output channels.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn
from torch.nn import functional as F

from .unet import check_divisible, level_layout, patch_grid


class TextConditionalUNet(nn.Module):
    """``net(x, t, cond) -> output`` with ``cond = {"tokens": B x L x token_dim, "mask": B x L bool,
    "pooled": B x pooled_dim}`` (a :mod:`t2i_lightning.nn.text_encoder` output).

    Args: as :class:`t2i_lightning.nn.unet.ConditionalUNet` (``attention_resolutions`` get
    self- and cross-attention; the middle block always has both), plus
        token_dim: width D of the text tokens (the encoder's ``token_dim``).
        pooled_dim: width P of the pooled text embedding (the encoder's ``pooled_dim``).
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
        token_dim: int = 128,
        pooled_dim: int = 256,
        learn_variance: bool = True,
        groups: int = 32,
        patch_size: int = 1,
    ):
        super().__init__()
        grid = patch_grid(image_size, patch_size)
        channels, attend = level_layout(grid, base_channels, channel_mult, attention_resolutions, head_channels, groups)
        if token_dim <= 0 or pooled_dim <= 0:
            raise ValueError(f"token_dim and pooled_dim must be positive, got {token_dim} and {pooled_dim}")
        self.image_size, self.in_channels = image_size, in_channels
        self.token_dim, self.pooled_dim = token_dim, pooled_dim
        self.learn_variance, self.patch_size = learn_variance, patch_size
        self.downsampling = patch_size * 2 ** (len(channel_mult) - 1)
        down = tuple("SimpleCrossAttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attend)
        up = tuple("SimpleCrossAttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attend))
        self.token_norm = nn.LayerNorm(token_dim)
        self.pooled_norm = nn.LayerNorm(pooled_dim)
        self.unet = UNet2DConditionModel(
            sample_size=grid,
            in_channels=in_channels * patch_size**2,
            out_channels=in_channels * (2 if learn_variance else 1) * patch_size**2,
            down_block_types=down,
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            up_block_types=up,
            block_out_channels=tuple(channels),
            layers_per_block=num_res_blocks,
            dropout=dropout,
            norm_num_groups=groups,
            attention_head_dim=head_channels,
            cross_attention_dim=token_dim,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=pooled_dim,
            resnet_time_scale_shift="scale_shift",
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        check_divisible(x, self.downsampling)
        if not isinstance(cond, dict) or not {"tokens", "mask", "pooled"} <= cond.keys():
            raise ValueError('This U-Net is text-conditioned: pass cond = {"tokens", "mask", "pooled"}')
        tokens, mask, pooled = cond["tokens"], cond["mask"], cond["pooled"]
        if tokens.shape[-1] != self.token_dim or pooled.shape[-1] != self.pooled_dim:
            raise ValueError(
                f"Text features of width {tokens.shape[-1]} (tokens) and {pooled.shape[-1]} (pooled), but the U-Net "
                f"takes token_dim {self.token_dim} and pooled_dim {self.pooled_dim}"
            )
        p = self.patch_size
        out = self.unet(
            F.pixel_unshuffle(x, p),
            t,
            encoder_hidden_states=self.token_norm(tokens.to(x.dtype)),
            encoder_attention_mask=mask,
            class_labels=self.pooled_norm(pooled.to(x.dtype)),
        ).sample
        return F.pixel_shuffle(out, p)
