"""The ADM-style U-Net of the decoder, built from diffusers' ``UNet2DModel``.

Dhariwal & Nichol (2021, "Diffusion Models Beat GANs", sec. 3): residual blocks with GroupNorm,
SiLU and dropout; the timestep embedding conditions every block by scale and shift
(``resnet_time_scale_shift="scale_shift"``, AdaGN); BigGAN-style residual up/down-sampling
(``downsample_type="resnet"``); self-attention only at the listed low resolutions, with a fixed
number of channels per head. The conditioning vector (the standardised CLIP image embedding in
unCLIP, Ramesh et al. 2022 sec. 2.1 and the study) is projected to the timestep embedding's width
and added to it (diffusers' ``class_embed_type="identity"``). With ``learn_variance`` the network
outputs twice the image channels: the prediction, then the variance interpolation (Nichol &
Dhariwal 2021, eq. 15). With ``patch_size`` p > 1 the U-Net runs on the image rearranged into p x p
patches (``pixel_unshuffle``: p² times the channels at 1/p the side) and its output is put back
(``pixel_shuffle``), the invertible downsampling at the input of Hoogeboom et al. 2023 ("simple
diffusion", sec. 3.3): the full-resolution levels, most of a U-Net's cost, are gone.

With ``layout_size`` g > 0 a layout head (an MLP) regresses from the condition a g x g x C picture of
the image (its area average over g x g cells, trained with its own MSE by the stage), and the U-Net
reads it, upsampled bilinearly and detached, as C more input channels beside x_t: the embedding's
coarse layout given where each position can see it, as SR3 / Cascaded Diffusion Models (Saharia et al.
2021; Ho et al. 2021) give their low-resolution image. The same head maps the null condition to the
average picture, so classifier-free guidance's unconditional half reads that.

With ``self_condition`` the U-Net reads C more input channels, an estimate of the clean image
(self-conditioning, Chen et al. 2023; :mod:`t2i_lightning.diffusion.self_conditioning`): ``forward``'s
``x0_estimate``, zeros when it is not given.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn
from torch.nn import functional as F

LAYOUT_HIDDEN = 512  # width of the layout head's two hidden layers


def level_layout(
    image_size: int,
    base_channels: int,
    channel_mult: tuple[int, ...],
    attention_resolutions: tuple[int, ...],
    head_channels: int,
    groups: int,
) -> tuple[list[int], list[bool]]:
    """The channels of each U-Net level and whether it has attention (its resolution is listed),
    refusing channel counts that GroupNorm or the attention heads cannot split and an ``image_size``
    the levels cannot halve."""
    check_divisible(torch.empty(0, 0, image_size, image_size), 2 ** (len(channel_mult) - 1))
    channels = [base_channels * m for m in channel_mult]
    bad = [c for c in channels if c % groups or c % head_channels]
    if bad:
        raise ValueError(
            f"U-Net channels {channels}: each must be a multiple of groups={groups} and head_channels={head_channels}"
        )
    resolutions = [image_size // 2**i for i in range(len(channel_mult))]
    return channels, [r in attention_resolutions for r in resolutions]


def adm_unet(
    image_size: int,
    in_channels: int,
    out_channels: int,
    channels: list[int],
    attend: list[bool],
    num_res_blocks: int,
    dropout: float,
    head_channels: int,
    groups: int,
    **options,
) -> UNet2DModel:
    """diffusers' ``UNet2DModel`` with the ADM blocks: scale-shift (AdaGN) timestep conditioning, residual
    up/down-sampling, self-attention at the levels ``attend`` marks; ``options`` go to ``UNet2DModel``."""
    return UNet2DModel(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=out_channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attend),
        up_block_types=tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attend)),
        block_out_channels=tuple(channels),
        layers_per_block=num_res_blocks,
        downsample_type="resnet",
        upsample_type="resnet",
        dropout=dropout,
        attention_head_dim=head_channels,
        norm_num_groups=groups,
        resnet_time_scale_shift="scale_shift",
        **options,
    )


def patch_grid(image_size: int, patch_size: int) -> int:
    """The side of the grid of ``patch_size`` x ``patch_size`` pixel patches a U-Net runs on, refusing a
    patch that does not tile ``image_size``."""
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(f"patch_size must be a positive divisor of image_size={image_size}, got {patch_size}")
    return image_size // patch_size


def check_divisible(x: torch.Tensor, downsampling: int) -> None:
    """Refuse an image the U-Net cannot halve ``log2(downsampling)`` times."""
    if x.shape[-1] % downsampling or x.shape[-2] % downsampling:
        raise ValueError(
            f"Image size {tuple(x.shape[-2:])} is not divisible by the U-Net's downsampling factor {downsampling}"
        )


class ConditionalUNet(nn.Module):
    """``net(x, t, cond) -> output``: noisy images, timestep indices, conditioning vectors.

    Args:
        image_size: side of the square images it is trained on (any multiple of
            ``patch_size * 2 ** (len(channel_mult) - 1)`` works at sampling).
        in_channels: image channels (3).
        base_channels: channels of the first level; level i has ``base_channels * channel_mult[i]``.
        channel_mult: one multiplier per resolution level.
        num_res_blocks: residual blocks per level.
        attention_resolutions: resolutions of the levels (in positions, at ``image_size``; the first
            level has ``image_size / patch_size``) that get self-attention.
        head_channels: channels per attention head.
        dropout: dropout inside the residual blocks.
        cond_dim: size of the conditioning vector (the CLIP embedding dimension); 0 for none.
        learn_variance: output ``2 * in_channels`` channels (prediction, variance interpolation).
        groups: GroupNorm groups (must divide every level's channels).
        patch_size: side of the pixel patches each U-Net position holds (1: one pixel, no patching).
        layout_size: side g of the layout picture regressed from the condition and read beside x_t
            (0: none); needs ``cond_dim`` > 0.
        self_condition: read an estimate of x_0 beside x_t (self-conditioning).
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
        learn_variance: bool = True,
        groups: int = 32,
        patch_size: int = 1,
        layout_size: int = 0,
        self_condition: bool = False,
    ):
        super().__init__()
        if layout_size < 0 or (layout_size and not cond_dim):
            raise ValueError(f"layout_size must be 0, or positive with cond_dim > 0; got {layout_size}, cond_dim {cond_dim}")
        grid = patch_grid(image_size, patch_size)
        channels, attend = level_layout(grid, base_channels, channel_mult, attention_resolutions, head_channels, groups)
        self.image_size, self.in_channels, self.cond_dim = image_size, in_channels, cond_dim
        self.learn_variance, self.patch_size, self.layout_size = learn_variance, patch_size, layout_size
        self.self_condition = self_condition
        inputs = 1 + self_condition + bool(layout_size)  # x_t, the estimate of x_0, the layout picture
        self.downsampling = patch_size * 2 ** (len(channel_mult) - 1)
        # Per patch position: p² values of each image channel in, and of each output channel out; the
        # prediction's channels come first, so pixel_shuffle returns [prediction, variance] per pixel.
        self.unet = adm_unet(
            grid, in_channels * inputs * patch_size**2,
            in_channels * (2 if learn_variance else 1) * patch_size**2, channels,
            attend, num_res_blocks, dropout, head_channels, groups, add_attention=True,
            class_embed_type="identity" if cond_dim else None,
        )  # fmt: skip
        time_dim = channels[0] * 4  # UNet2DModel's timestep-embedding width
        self.cond_proj = (
            nn.Sequential(nn.Linear(cond_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            if cond_dim
            else None
        )
        self.layout_head = (
            nn.Sequential(
                nn.Linear(cond_dim, LAYOUT_HIDDEN), nn.SiLU(), nn.Linear(LAYOUT_HIDDEN, LAYOUT_HIDDEN), nn.SiLU(),
                nn.Linear(LAYOUT_HIDDEN, in_channels * layout_size**2),
            )
            if layout_size
            else None
        )  # fmt: skip

    def layout(self, cond: torch.Tensor) -> torch.Tensor:
        """The layout head's picture for ``cond`` (B x C x g x g), what the stage trains against the
        image's g x g area average."""
        g = self.layout_size
        return self.layout_head(cond).view(len(cond), self.in_channels, g, g)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, x0_estimate: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_divisible(x, self.downsampling)
        if x0_estimate is not None and not self.self_condition:
            raise ValueError("This U-Net is not self-conditioned (self_condition=False): it reads no x0_estimate")
        if self.self_condition:  # before the layout picture: the channels' order is x_t, estimate, picture
            x = torch.cat([x, torch.zeros_like(x) if x0_estimate is None else x0_estimate.to(x.dtype)], 1)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("This U-Net is conditioned: pass cond (batch x cond_dim)")
            cond = cond.to(x.dtype)
            extra = self.cond_proj(cond)
        else:
            extra = None
        if self.layout_head is not None:  # the picture's dtype is autocast's; x's is the sampler's
            picture = self.layout(cond).detach().to(x.dtype)
            x = torch.cat([x, F.interpolate(picture, size=x.shape[-2:], mode="bilinear", align_corners=False)], 1)
        p = self.patch_size
        return F.pixel_shuffle(self.unet(F.pixel_unshuffle(x, p), t, class_labels=extra).sample, p)
