"""``t2i evaluate-upsampler``: the upsampler against bicubic on whole validation images: PSNR, SSIM,
edge sharpness and seconds per image, for each noise-augmentation level and step count asked for.

    t2i evaluate-upsampler --upsampler UPSAMPLER.ckpt --n 32 --out report.json
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import default_checkpoint
from .options import add_command, add_device_arguments, add_sampler_argument, options_from

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class UpsamplerReportOptions:
    upsampler: str
    data: str
    n: int
    aug_levels: list[float] | None
    steps: list[int] | None
    sampler: str | None
    seed: int
    device: torch.device
    precision: str
    out: str


def register(subparsers: argparse._SubParsersAction) -> None:
    report = add_command(subparsers, "evaluate-upsampler", __doc__, help="PSNR/SSIM/sharpness/time of the upsampler vs bicubic on whole validation images")
    report.add_argument("--upsampler", default=default_checkpoint("upsampler"), help="upsampler checkpoint (default: %(default)s)")
    report.add_argument("--data", default="data/shapes", help="dataset with val shards (default: data/shapes)")
    report.add_argument("--n", type=int, default=32, help="validation images (default: 32)")
    report.add_argument("--aug-levels", type=float, nargs="+", default=None, help="levels to sweep (default: its own)")
    report.add_argument("--steps", type=int, nargs="+", default=None, help="step counts to sweep (default: its own)")
    add_sampler_argument(report, default=None)
    report.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    add_device_arguments(report)
    report.add_argument("--out", default="runs/upsampler/report.json", help="JSON report (default: runs/upsampler/report.json)")
    report.set_defaults(run=lambda args: run(options_from(UpsamplerReportOptions, args)))


def run(options: UpsamplerReportOptions) -> None:
    from ..data.shards import check_writable, write_json_atomic
    from ..eval.upsampler_report import format_report, upsampler_report
    from ..pipeline import load_upsampler

    if options.n <= 0:
        raise ValueError(f"--n must be positive, got {options.n}")
    if any(not 0 <= level <= 1 for level in options.aug_levels or []) or any(s <= 0 for s in options.steps or []):
        raise ValueError("--aug-levels must lie in [0, 1] and --steps must be positive")
    check_writable(options.out)
    upsampler = load_upsampler(options.upsampler, options.device)
    report = upsampler_report(upsampler, options.data, options.n, options.aug_levels, options.steps, options.sampler, seed=options.seed,
                              precision=options.precision)  # fmt: skip
    report["upsampler"] = options.upsampler
    write_json_atomic(options.out, report)
    print(format_report(report))
    print(f"-> {options.out}")
