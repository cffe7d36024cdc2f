"""``--precision`` for the commands that sample with a diffusion U-Net (``t2i sample``, ``upsample``,
``evaluate-decoder``, ``evaluate-upsampler``, ``evaluate``)."""

from __future__ import annotations

import argparse

from .diffusion import SAMPLING_PRECISIONS


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``: the decoder's and the upsampler's U-Nets in float32 or under bfloat16 autocast while sampling."""
    parser.add_argument(
        "--precision", choices=SAMPLING_PRECISIONS, default="32-true",
        help="the U-Nets (decoder, upsampler) while sampling: 32-true, or bf16-mixed (bfloat16 autocast; the "
        "sampler's arithmetic and guidance stay float32; faster on CPUs with native bf16 and on GPUs) (default: 32-true)",
    )  # fmt: skip
