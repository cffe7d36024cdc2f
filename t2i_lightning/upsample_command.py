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

import numpy as np
import torch

from .data.image_io import open_image, save_png_atomic, tensor_to_images, to_rgb
from .data.shards import check_writable, write_json_atomic
from .pipeline import DEFAULT_UPSAMPLER, clip_image_embeddings, load_recorded_clip, load_upsampler
from .precision_option import add_precision_argument
from .stages.upsampler import UpsamplerStage


def add_upsampler_options(parser: argparse.ArgumentParser, default_note: str) -> None:
    """``--upsampler`` and the sampling settings that override the checkpoint's own."""
    parser.add_argument(
        "--upsampler", default=None, help=f"upsampler checkpoint (default: {DEFAULT_UPSAMPLER}{default_note})"
    )
    parser.add_argument(
        "--up-sampler", choices=("ddim", "ddpm"), default=None, help="upsampler's sampler (default: its own)"
    )
    parser.add_argument(
        "--up-steps", type=int, default=None, help="upsampler's sampling steps (default: its own)"
    )
    parser.add_argument(
        "--aug-level", type=float, default=None,
        help="noise-augmentation level of the low-res input, in [0, 1] (default: the upsampler's own)",
    )  # fmt: skip


def check_upsampler_args(args: argparse.Namespace) -> None:
    if args.up_steps is not None and args.up_steps <= 0:
        raise ValueError(f"--up-steps must be positive, got {args.up_steps}")
    if args.aug_level is not None and not 0 <= args.aug_level <= 1:
        raise ValueError(f"--aug-level must be in [0, 1], got {args.aug_level}")


def upsample_tensor(
    upsampler: UpsamplerStage,
    images: torch.Tensor,
    args: argparse.Namespace,
    image_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """``images`` (B x 3 x h x w in [-1, 1]) through the upsampler with the command line's settings."""
    return upsampler.sample(
        images, image_embeddings=image_embeddings, aug_level=args.aug_level, sampler=args.up_sampler,
        steps=args.up_steps, generator=torch.Generator().manual_seed(args.seed), precision=args.precision,
    )  # fmt: skip


def add_upsample_parser(subparsers: argparse._SubParsersAction) -> None:
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
    add_precision_argument(upsample)


def run_upsample(args: argparse.Namespace) -> None:
    check_upsampler_args(args)
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"Image not found: {args.input}")
    check_writable(args.out)
    image = to_rgb(open_image(args.input))
    upsampler = load_upsampler(args.upsampler or DEFAULT_UPSAMPLER)
    factor = upsampler.net.factor
    upsampler.net.check_size(image.height * factor, image.width * factor)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
    embeddings = None
    if upsampler.conditions_on_embedding:
        clip = load_recorded_clip(upsampler.clip_identity, "upsampler", args.clip)
        embeddings = clip_image_embeddings(clip, [image])
    big = upsample_tensor(upsampler, pixels, args, embeddings)
    path = save_png_atomic(tensor_to_images(big)[0], args.out)
    print(f"{image.width}x{image.height} -> {big.shape[-1]}x{big.shape[-2]}: {path}")


def add_evaluate_upsampler_parser(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "evaluate-upsampler",
        help="PSNR/SSIM/sharpness/time of the upsampler vs bicubic on whole validation images",
        description="Upsample the first --n validation images' downsampled versions with bicubic and with the "
        "upsampler (for each --aug-levels and --steps) and score them against the originals.",
    )
    report.add_argument("--upsampler", default=DEFAULT_UPSAMPLER, help=f"upsampler checkpoint (default: {DEFAULT_UPSAMPLER})")
    report.add_argument("--data", default="data/shapes", help="dataset with val shards (default: data/shapes)")
    report.add_argument("--n", type=int, default=32, help="validation images (default: 32)")
    report.add_argument("--aug-levels", type=float, nargs="+", default=None, help="levels to sweep (default: its own)")
    report.add_argument("--steps", type=int, nargs="+", default=None, help="step counts to sweep (default: its own)")
    report.add_argument("--sampler", choices=("ddim", "ddpm"), default=None, help="sampler (default: its own)")
    report.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    add_precision_argument(report)
    report.add_argument("--out", default="runs/upsampler/report.json", help="JSON report (default: runs/upsampler/report.json)")


def run_evaluate_upsampler(args: argparse.Namespace) -> None:
    from .eval.upsampler_report import format_report, upsampler_report

    if args.n <= 0:
        raise ValueError(f"--n must be positive, got {args.n}")
    if any(not 0 <= level <= 1 for level in args.aug_levels or []) or any(s <= 0 for s in args.steps or []):
        raise ValueError("--aug-levels must lie in [0, 1] and --steps must be positive")
    check_writable(args.out)
    upsampler = load_upsampler(args.upsampler)
    report = upsampler_report(upsampler, args.data, args.n, args.aug_levels, args.steps, args.sampler, seed=args.seed,
                              precision=args.precision)  # fmt: skip
    report["upsampler"] = args.upsampler
    write_json_atomic(args.out, report)
    print(format_report(report))
    print(f"-> {args.out}")
