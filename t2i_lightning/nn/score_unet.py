"""The noise-conditional score network of the captioner-guided system, built from diffusers' ``UNet2DModel``.

s_θ(x, σ) ≈ ∇_x log p_σ(x) (Song & Ermon 2019, "NCSN"). The noise level enters as a Gaussian
Fourier projection of log σ (diffusers' ``time_embedding_type="fourier"``, the NCSN++ embedding of
Song et al. 2021, "Score-Based Generative Modeling through SDEs", appendix H.1), and the U-Net's
output is divided by σ (the same model class does this for Fourier embeddings), the
parameterisation s_θ(x, σ) = f_θ(x, σ)/σ that NCSNv2 recommends (Song & Ermon 2020, sec. 3.1,
technique 3): the score's norm grows like 1/σ, which the network then need not learn. The blocks
are the decoder's ADM blocks (:mod:`t2i_lightning.nn.unet`), with self-attention at the listed
low resolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import adm_unet, check_divisible, level_layout


class ScoreUNet(nn.Module):
    """``net(x, sigma) -> score`` for images x (B x C x S x S) and noise levels ``sigma`` [B] (> 0).

    Args: as :class:`t2i_lightning.nn.unet.ConditionalUNet` without conditioning or learned variance.
    """

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (8,),
        head_channels: int = 32,
        dropout: float = 0.0,
        groups: int = 32,
    ):
        super().__init__()
        channels, attend = level_layout(image_size, base_channels, channel_mult, attention_resolutions, head_channels, groups)
        self.image_size, self.in_channels = image_size, in_channels
        self.downsampling = 2 ** (len(channel_mult) - 1)
        self.unet = adm_unet(
            image_size, in_channels, in_channels, channels, attend, num_res_blocks, dropout, head_channels, groups,
            time_embedding_type="fourier",
        )  # fmt: skip

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.downsampling)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        if bool((sigma <= 0).any()):
            raise ValueError("noise levels must be positive")
        return self.unet(x, sigma).sample  # f(x, log σ) / σ
