"""``t2i upsample``: one image through the upsampler (64 -> 256 by default), and the upsampler options
that ``t2i sample`` shares.

    t2i upsample --in small.png --out big.png [--steps 10] [--aug-level 0.1] [--seed 0]

Any image whose side times the upsampler's factor its U-Net can halve enough times works (64px
images give 256px ones). An upsampler conditioned on CLIP image embeddings embeds the input
image with the CLIP its checkpoint recorded.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import default_checkpoint
from .options import add_device_arguments, add_sampler_argument, options_from

if TYPE_CHECKING:
    import torch

    from ..stages.diffusion import DiffusionStage


@dataclass(frozen=True, kw_only=True)
class UpsampleOptions:
    input: str
    out: str
    upsampler: str | None
    up_sampler: str | None
    up_steps: int | None
    aug_level: float | None
    clip: str | None
    seed: int
    device: torch.device
    precision: str


if TYPE_CHECKING:
    from .sample import SampleOptions

    UpsamplerSettings = SampleOptions | UpsampleOptions  # what an upsampling pass reads


def add_upsampler_options(parser: argparse.ArgumentParser, default_note: str) -> None:
    """``--upsampler`` and the sampling settings that override the checkpoint's own."""
    parser.add_argument(
        "--upsampler", default=None, help=f"upsampler checkpoint (default: {default_checkpoint('upsampler')}{default_note})"
    )
    add_sampler_argument(parser, "--up-sampler", default=None, help="the upsampler's sampler")
    parser.add_argument(
        "--up-steps", type=int, default=None, help="upsampler's sampling steps (default: its own)"
    )
    parser.add_argument(
        "--aug-level", type=float, default=None,
        help="noise-augmentation level of the low-res input, in [0, 1] (default: the upsampler's own)",
    )  # fmt: skip


def check_upsampler_args(options: UpsamplerSettings) -> None:
    if options.up_steps is not None and options.up_steps <= 0:
        raise ValueError(f"--up-steps must be positive, got {options.up_steps}")
    if options.aug_level is not None and not 0 <= options.aug_level <= 1:
        raise ValueError(f"--aug-level must be in [0, 1], got {options.aug_level}")


def upsample_tensor(
    upsampler: DiffusionStage,
    images: torch.Tensor,
    options: UpsamplerSettings,
    image_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:

    """``images`` (B x 3 x h x w in [-1, 1]) through the upsampler with the command line's settings, on the
    upsampler's device (the noise drawn there)."""
    import torch

    device = upsampler.device
    embeddings = None if image_embeddings is None else image_embeddings.to(device)
    return upsampler.sample(
        images.to(device), image_embeddings=embeddings, aug_level=options.aug_level, sampler=options.up_sampler,
        steps=options.up_steps, generator=torch.Generator(device=device).manual_seed(options.seed), precision=options.precision,
    )  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    upsample = subparsers.add_parser(
        "upsample",
        help="upsample an image with the trained upsampler (64 -> 256)",
        description=__doc__.split("\n\n")[0],
    )
    upsample.add_argument("--in", dest="input", required=True, help="input image (e.g. a 64px PNG)")
    upsample.add_argument("--out", required=True, help="output PNG")
    add_upsampler_options(upsample, "")
    upsample.add_argument(
        "--clip", default=None, help="CLIP weights, for an upsampler conditioned on embeddings"
    )
    upsample.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    add_device_arguments(upsample)
    upsample.set_defaults(run=lambda args: run(options_from(UpsampleOptions, args)))



def run(options: UpsampleOptions) -> None:
    import numpy as np
    import torch

    from ..data.image_io import open_image, save_png_atomic, tensor_to_images, to_rgb
    from ..data.shards import check_writable
    from ..pipeline import DEFAULT_UPSAMPLER, clip_image_embeddings, load_recorded_clip, load_upsampler

    check_upsampler_args(options)
    if not os.path.isfile(options.input):
        raise FileNotFoundError(f"Image not found: {options.input}")
    check_writable(options.out)
    image = to_rgb(open_image(options.input))
    upsampler = load_upsampler(options.upsampler or DEFAULT_UPSAMPLER, options.device)
    factor = upsampler.net.factor
    upsampler.net.check_size(image.height * factor, image.width * factor)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
    embeddings = None
    if upsampler.conditions_on_embedding:
        clip = load_recorded_clip(upsampler.clip_identity, "upsampler", options.clip, device=options.device)
        embeddings = clip_image_embeddings(clip, [image])
    big = upsample_tensor(upsampler, pixels, options, embeddings)
    path = save_png_atomic(tensor_to_images(big)[0], options.out)
    print(f"{image.width}x{image.height} -> {big.shape[-1]}x{big.shape[-2]}: {path}")

