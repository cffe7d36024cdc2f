"""``t2i sample --method score``: the captioner-guided score model, and ``t2i evaluate-guidance``.

    t2i sample --method score --prompt "a red circle" --guidance 3 --out red.png
    t2i evaluate-guidance --prompts "a red circle" "a blue square" --guidance 0 1 3 10 --n 16

Sampling is annealed Langevin dynamics with the score model's score plus λ·∇ log p(prompt | x_σ, σ)
from the frozen noise-conditioned captioner (Bayes' rule); ``--guidance 0`` is the unguided model.
The norms of both terms are printed per noise level, so λ can be tuned.
"""

from __future__ import annotations

import argparse
import time

import torch

from .data.image_io import grid_image, save_png_atomic, tensor_to_images
from .data.shards import check_writable, write_json_atomic
from .diffusion import GUIDANCE_SCHEDULES, GuidanceNorms
from .nn.clip import warn_if_truncated
from .nn.text_encoder import check_captions
from .pipeline import DEFAULT_CAPTIONER, DEFAULT_SCORE, load_captioner, load_score_model
from .stages.captioner import CaptionerStage
from .stages.score import ScoreStage

NOISE_LEVEL_KEYS = ("sigma_max", "sigma_min", "num_levels")


def add_score_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score", default=DEFAULT_SCORE, help=f"score model checkpoint (default: {DEFAULT_SCORE})")
    parser.add_argument(
        "--captioner", default=DEFAULT_CAPTIONER, help=f"captioner checkpoint (default: {DEFAULT_CAPTIONER})"
    )
    parser.add_argument(
        "--guidance-schedule", choices=sorted(GUIDANCE_SCHEDULES), default="constant",
        help="how lambda varies over the noise levels (default: constant)",
    )  # fmt: skip
    parser.add_argument("--langevin-steps", type=int, default=None, help="Langevin steps per level (default: the model's)")
    parser.add_argument("--langevin-eps", type=float, default=None, help="Langevin step size epsilon (default: the model's)")


def check_score_args(args: argparse.Namespace, guidances: list[float]) -> None:
    if any(g < 0 for g in guidances):
        raise ValueError("--guidance must be >= 0")
    if args.langevin_steps is not None and args.langevin_steps <= 0:
        raise ValueError(f"--langevin-steps must be positive, got {args.langevin_steps}")
    if args.langevin_eps is not None and args.langevin_eps <= 0:
        raise ValueError(f"--langevin-eps must be positive, got {args.langevin_eps}")


def load_score_pair(args: argparse.Namespace, guided: bool) -> tuple[ScoreStage, CaptionerStage | None]:
    """The score model and, for guided sampling, the captioner, which must share its noise levels."""
    score = load_score_model(args.score)
    if not guided:
        return score, None
    captioner = load_captioner(args.captioner)
    check_same_noise_levels(score, captioner)
    return score, captioner


def check_same_noise_levels(score: ScoreStage, captioner: CaptionerStage) -> None:
    """Refuse a captioner trained at other noise levels than the score model it is to guide."""
    ours = {k: score.hparams[k] for k in NOISE_LEVEL_KEYS}
    theirs = {k: captioner.hparams[k] for k in NOISE_LEVEL_KEYS}
    if ours != theirs:
        raise ValueError(f"The captioner was trained at other noise levels ({theirs}) than the score model ({ours})")


def warn_unknown_words(captioner: CaptionerStage | None, prompts: list[str]) -> None:
    """Say which prompt words the captioner cannot read (they count as one unknown token each), and
    which prompts are longer than its context (they are truncated)."""
    if captioner is None:
        return
    unknown = captioner.net.vocab.unknown_words(prompts)
    if unknown:
        print(f"warning: the captioner never saw {', '.join(unknown)}: guidance reads them as unknown tokens")
    warn_if_truncated(captioner.net.vocab.bpe, prompts)


def draw(score: ScoreStage, captioner: CaptionerStage | None, prompt: str, guidance: float, n: int,
         args: argparse.Namespace, norms: GuidanceNorms | None = None, progress: bool = True) -> torch.Tensor:  # fmt: skip
    """``n`` samples for ``prompt`` at guidance ``guidance`` with the command line's Langevin settings."""
    return score.sample(
        n, captioner=captioner.net if captioner is not None and guidance > 0 else None, prompt=prompt,
        guidance=guidance, schedule=args.guidance_schedule, eps=args.langevin_eps, steps_per_level=args.langevin_steps,
        image_size=args.size, generator=torch.Generator().manual_seed(args.seed), progress=progress, norms=norms,
    )  # fmt: skip


def run_score_sample(args: argparse.Namespace) -> None:
    """``t2i sample --method score``: a grid of ``--n`` samples for ``--prompt``."""
    if args.prompt is None:
        raise ValueError("--method score takes --prompt (with --guidance > 0 the captioner steers towards it)")
    check_score_args(args, [args.guidance])
    score, captioner = load_score_pair(args, args.guidance > 0)
    warn_unknown_words(captioner, [args.prompt])
    norms = GuidanceNorms({}, {})
    images = draw(score, captioner, args.prompt, args.guidance, args.n, args, norms)
    if args.guidance > 0:
        print(f"{'sigma':>8} {'|score|':>10} {'|guidance|':>11}   (mean per-sample L2 norms, lambda={args.guidance})")
        for row in norms.summary():
            print(f"{row['sigma']:>8.4f} {row['score_norm']:>10.4g} {row['guidance_norm']:>11.4g}")
    path = save_png_atomic(grid_image(tensor_to_images(images), min(len(images), 8)), args.out)
    how = f"guided by the captioner (lambda {args.guidance})" if args.guidance > 0 else "unguided"
    print(f"{len(images)} images of {images.shape[-1]}x{images.shape[-1]}, {how} -> {path}")


def add_evaluate_guidance_parser(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "evaluate-guidance",
        help="share of score-model samples with the prompt's colour, unguided vs captioner-guided",
        description="Draw --n samples per prompt at each --guidance and report how often the dominant object "
        "colour is the prompt's (a colour-histogram check), with seconds per image.",
    )
    report.add_argument("--prompts", nargs="+", default=["a red circle", "a blue square", "a green triangle",
                                                         "a yellow star"], help="single-colour prompts")  # fmt: skip
    report.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="lambdas (default: 0 1 3)")
    report.add_argument("--n", type=int, default=16, help="samples per prompt and lambda (default: 16)")
    report.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    report.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    report.add_argument("--out", default="runs/score/guidance.json", help="JSON report (default: runs/score/guidance.json)")
    add_score_options(report)


def run_evaluate_guidance(args: argparse.Namespace) -> None:
    from .data.shapes.captions import parse_caption
    from .data.shapes.scene import COLOURS
    from .eval.colour import dominant_object_colour

    check_score_args(args, args.guidance)
    if args.n <= 0:
        raise ValueError(f"--n must be positive, got {args.n}")
    check_captions(args.prompts)
    check_writable(args.out)
    colours = {prompt: parse_caption(prompt).groups[0].colour for prompt in args.prompts}
    score, captioner = load_score_pair(args, any(g > 0 for g in args.guidance))
    warn_unknown_words(captioner, args.prompts)
    rows = []
    for guidance in args.guidance:
        hits = total = 0
        start = time.perf_counter()
        for prompt, colour in colours.items():
            images = draw(score, captioner, prompt, guidance, args.n, args, progress=False)
            hits += sum(dominant_object_colour(image, COLOURS) == colour for image in images)
            total += len(images)
        rows.append({"guidance": guidance, "colour_match": hits / total, "images": total,
                     "s_per_image": (time.perf_counter() - start) / total})  # fmt: skip
        print(f"lambda {guidance:>6g}: prompt colour in {hits}/{total} samples ({hits / total:.1%}), "
              f"{rows[-1]['s_per_image']:.2f} s/image")  # fmt: skip
    write_json_atomic(args.out, {"prompts": args.prompts, "schedule": args.guidance_schedule, "score": args.score,
                                 "captioner": args.captioner, "threads": torch.get_num_threads(), "rows": rows})  # fmt: skip
    print(f"-> {args.out}")
