"""The sampler's network in bfloat16, the sampler's arithmetic in float32.

Every sampler here turns autocast off and keeps x_t, x̂_0, the posterior and the guidance in float32
(:mod:`t2i_lightning.diffusion.samplers`). What costs the time is the network; running it alone in a
lower precision, with the numbers around it kept in full precision, is what Karras et al. 2022
("EDM", sec. 5 and their released sampler) do with a float16 network inside float64 sampling. The
wrapper goes around the *network*, not around a guided model function, so that classifier-free
guidance's extrapolation uncond + s·(cond − uncond) is computed in float32 from the two outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .names import SAMPLING_PRECISIONS


def network_in_precision(net: Callable[..., torch.Tensor], precision: str) -> Callable[..., torch.Tensor]:
    """``net`` itself for "32-true"; for "bf16-mixed", a callable that runs ``net(*args)`` under bfloat16
    autocast on its first argument's device and returns the output as float32."""
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(f"Sampling precision must be one of {', '.join(SAMPLING_PRECISIONS)}, got {precision!r}")
    if precision == "32-true":
        return net

    def in_bfloat16(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return net(x, *args, **kwargs).float()

    return in_bfloat16
