"""``t2i evaluate-guidance``: the share of score-model samples whose dominant object colour is the
prompt's, unguided vs captioner-guided, with seconds per image.

    t2i evaluate-guidance --prompts "a red circle" "a blue square" --guidance 0 1 3 10 --n 16
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import add_command, add_device_arguments, add_score_options, options_from

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class GuidanceReportOptions:
    prompts: list[str]
    guidance: list[float]
    n: int
    size: int | None
    seed: int
    out: str
    score: str
    captioner: str
    guidance_schedule: str
    langevin_steps: int | None
    langevin_eps: float | None
    device: torch.device


def register(subparsers: argparse._SubParsersAction) -> None:
    report = add_command(subparsers, "evaluate-guidance", __doc__, help="share of score-model samples with the prompt's colour, unguided vs captioner-guided")
    report.add_argument("--prompts", nargs="+", default=["a red circle", "a blue square", "a green triangle",
                                                         "a yellow star"], help="single-colour prompts")  # fmt: skip
    report.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="lambdas (default: 0 1 3)")
    report.add_argument("--n", type=int, default=16, help="samples per prompt and lambda (default: 16)")
    report.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    report.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    report.add_argument("--out", default="runs/score/guidance.json", help="JSON report (default: runs/score/guidance.json)")
    add_score_options(report)
    add_device_arguments(report, precision=False)
    report.set_defaults(run=lambda args: run(options_from(GuidanceReportOptions, args)))


def run(options: GuidanceReportOptions) -> None:
    import torch

    from ..data.shapes.captions import parse_caption
    from ..data.shapes.scene import COLOURS
    from ..data.shards import check_writable, write_json_atomic
    from ..metrics.colour import dominant_object_colour
    from ..nn.text_encoder import check_captions
    from .score import check_score_args, draw, load_score_pair, warn_unknown_words

    check_score_args(options, options.guidance)
    if options.n <= 0:
        raise ValueError(f"--n must be positive, got {options.n}")
    check_captions(options.prompts)
    check_writable(options.out)
    colours = {prompt: parse_caption(prompt).groups[0].colour for prompt in options.prompts}
    score, captioner = load_score_pair(options, any(g > 0 for g in options.guidance))
    warn_unknown_words(captioner, options.prompts)
    rows = []
    for guidance in options.guidance:
        hits = total = 0
        start = time.perf_counter()
        for prompt, colour in colours.items():
            images = draw(score, captioner, prompt, guidance, options.n, options, progress=False).cpu()
            hits += sum(dominant_object_colour(image, COLOURS) == colour for image in images)
            total += len(images)
        rows.append({"guidance": guidance, "colour_match": hits / total, "images": total,
                     "s_per_image": (time.perf_counter() - start) / total})  # fmt: skip
        print(f"lambda {guidance:>6g}: prompt colour in {hits}/{total} samples ({hits / total:.1%}), "
              f"{rows[-1]['s_per_image']:.2f} s/image")  # fmt: skip
    write_json_atomic(options.out, {"prompts": options.prompts, "schedule": options.guidance_schedule, "score": options.score,
                                 "captioner": options.captioner, "threads": torch.get_num_threads(), "rows": rows})  # fmt: skip
    print(f"-> {options.out}")
