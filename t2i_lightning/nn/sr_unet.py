"""The super-resolution U-Net of the upsampler, built from diffusers' ``UNet2DModel``.

SR3 / Cascaded Diffusion Models (Saharia et al. 2021; Ho et al. 2021, sec. 3): the noisy
high-resolution image is concatenated along channels with the low-resolution conditioning image
upsampled bicubically to the same size, and the U-Net denoises the pair. As in CDM and Imagen
(sec. 2.4) the augmentation level of the low-resolution input is embedded like a timestep and
added to the timestep embedding; DALL-E 2 (Ramesh et al. 2022, sec. 2.1) and Karlo also add the
projected CLIP image embedding there. There is no attention at all (Imagen's super-resolution
models drop self-attention at high resolutions, sec. 2.5), so the network is fully convolutional
and applies to any image size divisible by its downsampling factor: it is trained on crops and
sampled on whole images.

With ``noisy_input=False`` the same network reads the bicubic image alone and is a deterministic
regressor (:meth:`SuperResUNet.regress`): the upsampler's predictor, whose output the diffusion
model refines (predict-and-refine, Whang et al. 2022, "Deblurring via Stochastic Refinement").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from .unet import adm_unet, check_divisible, level_layout

AUG_LEVEL_SCALE = 1000.0  # a level in [0, 1] is embedded as a timestep in [0, 1000]


def upsample_bicubic(low_res: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upsampling by ``factor`` (the conditioning input of SR3/CDM, and the baseline)."""
    return F.interpolate(low_res, scale_factor=factor, mode="bicubic", align_corners=False)


class SuperResUNet(nn.Module):
    """``net(x_t, t, cond) -> output`` with ``cond = {"low_res": B x C x h x w, "aug_level": B}`` and,
    when ``cond_dim`` > 0, ``"embedding": B x cond_dim``; x_t is B x C x (h·factor) x (w·factor).

    Args:
        factor: upsampling factor (4 for 64 -> 256).
        image_size: the high-resolution side it is sampled at by default (256).
        in_channels: image channels (3); the network reads twice as many.
        base_channels, channel_mult, num_res_blocks, dropout, groups: as in
            :class:`t2i_lightning.nn.unet.ConditionalUNet`.
        cond_dim: size of the (standardised) CLIP image embedding added to the timestep
            embedding; 0 for none.
        learn_variance: output ``2 * in_channels`` channels (prediction, variance interpolation).
        noisy_input: read the noisy image beside the condition (a diffusion network); False for a
            regressor that reads the condition alone (call :meth:`regress`).
    """

    def __init__(
        self,
        factor: int = 4,
        image_size: int = 256,
        in_channels: int = 3,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2, 4),
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        cond_dim: int = 0,
        learn_variance: bool = True,
        groups: int = 32,
        noisy_input: bool = True,
    ):
        super().__init__()
        if factor < 2:
            raise ValueError(f"factor must be at least 2, got {factor}")
        if learn_variance and not noisy_input:
            raise ValueError("A regressor (noisy_input false) has no variance to learn: set learn_variance false")
        channels, _ = level_layout(image_size, base_channels, channel_mult, (), groups, groups)
        self.factor, self.image_size, self.in_channels, self.cond_dim = (
            factor,
            image_size,
            in_channels,
            cond_dim,
        )
        self.learn_variance, self.noisy_input = learn_variance, noisy_input
        self.downsampling = 2 ** (len(channel_mult) - 1)
        self.unet = adm_unet(
            image_size, (2 if noisy_input else 1) * in_channels, in_channels * (2 if learn_variance else 1), channels, [False] * len(channels),
            num_res_blocks, dropout, groups, groups, add_attention=False, class_embed_type="identity",
        )  # fmt: skip
        time_dim = channels[0] * 4  # UNet2DModel's timestep-embedding width
        self.aug_dim = channels[0]
        self.aug_proj = nn.Sequential(
            nn.Linear(self.aug_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.cond_proj = (
            nn.Sequential(nn.Linear(cond_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            if cond_dim
            else None
        )

    @property
    def low_res_size(self) -> int:
        return self.image_size // self.factor

    def check_size(self, height: int, width: int) -> None:
        """Refuse a high-resolution size the U-Net cannot halve enough times."""
        check_divisible(torch.empty(0, 0, height, width), self.downsampling)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.noisy_input:
            raise ValueError("This U-Net is a regressor (noisy_input false): call regress(cond)")
        self._check_cond(cond)
        return self._run(x, t, cond)

    def regress(self, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """The regressor's output for ``cond`` alone (B x C x h·factor x w·factor), at timestep 0."""
        if self.noisy_input:
            raise ValueError("This U-Net denoises a noisy image: call it as net(x_t, t, cond)")
        self._check_cond(cond)
        low_res = cond["low_res"]
        return self._run(None, torch.zeros(len(low_res), dtype=torch.long, device=low_res.device), cond)

    @staticmethod
    def _check_cond(cond: dict[str, torch.Tensor]) -> None:
        if not isinstance(cond, dict) or not {"low_res", "aug_level"} <= cond.keys():
            raise ValueError(
                'This U-Net is conditioned on a low-resolution image: pass cond = {"low_res", "aug_level"}'
            )

    def _run(self, x: torch.Tensor | None, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """The U-Net on [x, bicubic(low_res)] (or the bicubic image alone when x is None)."""
        low_res = cond["low_res"] if x is None else cond["low_res"].to(x.dtype)
        bicubic = upsample_bicubic(low_res, self.factor)
        if x is not None and tuple(x.shape[-2:]) != tuple(bicubic.shape[-2:]):
            raise ValueError(
                f"The low-resolution input {tuple(low_res.shape[-2:])} times {self.factor} is not the "
                f"image size {tuple(x.shape[-2:])}"
            )
        self.check_size(*bicubic.shape[-2:])
        level = cond["aug_level"].to(bicubic.device).reshape(-1).expand(bicubic.shape[0]) * AUG_LEVEL_SCALE
        extra = self.aug_proj(get_timestep_embedding(level, self.aug_dim).to(bicubic.dtype))
        if self.cond_proj is not None:
            if cond.get("embedding") is None:
                raise ValueError("This U-Net is conditioned on an image embedding: pass cond['embedding']")
            extra = extra + self.cond_proj(cond["embedding"].to(bicubic.dtype))
        inputs = bicubic if x is None else torch.cat([x, bicubic], dim=1)
        return self.unet(inputs, t, class_labels=extra).sample
