"""``t2i evaluate --config stages/evaluate.yaml``: the evaluation table (:mod:`t2i_lightning.eval.evaluate`). Draw
each variant for the same reference captions and score it: judge- and CLIP-space Fréchet distance, KID,
precision/recall; CLIP score; exact alignment; FID/IS when Inception weights are present; PSNR/SSIM where
a ground truth exists; seconds per image.

    t2i evaluate --config stages/evaluate.yaml                 # -> runs/eval/table.md, table.json, grids/
    t2i evaluate --config stages/evaluate.yaml --n 50 --variants real full --force

The YAML holds any of the options below by their names with underscores (``decoder_text``,
``subset_sizes``); a key that is not an option is an error; command-line flags override the file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from ..data.shards import check_writable
from ..eval.variants import FIXED, SamplingOptions
from ..registry import DEMO_CLIP, DEMO_EMBEDDINGS, default_checkpoint
from .options import add_cfg_argument, add_command, add_device_arguments, add_sampler_argument, options_from

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions:
    config: str | None
    data: str
    embeddings: str
    split: str
    real_split: str
    n: int
    seeds: list[int]
    subset_sizes: list[int]
    variants: list[str]
    clip: str
    translator: str
    decoder: str
    upsampler: str
    decoder_text: str
    score: str
    captioner: str
    judge: str
    clip_model: str
    eval_clip: str | None
    eval_clip_model: str | None
    inception_weights: str | None
    sampler: str
    steps: str
    cfg: float
    threshold: float
    batch_size: int
    device: torch.device
    precision: str
    out: str
    force: bool


DEFAULT_VARIANTS = ["real", "full", "decoder_only", "no_translator"]


def add_evaluate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML file of these options (e.g. stages/evaluate.yaml)")
    parser.add_argument("--data", default="data/shapes", help="dataset of the reference images (default: data/shapes)")
    parser.add_argument("--embeddings", default=DEMO_EMBEDDINGS,
                        help="its CLIP embeddings (for the decoder-only and no-translator rows)")  # fmt: skip
    parser.add_argument("--split", default="val", help="split of the reference images and captions (default: val)")
    parser.add_argument("--real-split", default="test", help="split of the second real set (default: test)")
    parser.add_argument("--n", type=int, default=100, help="images per variant and seed (default: 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default: 0 1)")
    parser.add_argument("--subset-sizes", type=int, nargs="*", default=[25, 50, 100],
                        help="set sizes for the judge-space distance's small-sample bias (default: 25 50 100)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help=f"rows: {', '.join(FIXED)}, cfg_<scale>, score_guided_<lambda> "
                             f"(default: {' '.join(DEFAULT_VARIANTS)})")  # fmt: skip
    for stage in ("clip", "translator", "decoder", "upsampler", "decoder_text", "score", "captioner", "judge"):
        default, name = default_checkpoint(stage), stage.replace("_", "-")
        parser.add_argument(f"--{name}", default=default, help=f"{name} checkpoint (default: {default})")
    parser.add_argument("--clip-model", default=DEMO_CLIP, help="open_clip model of --clip")
    parser.add_argument("--eval-clip", default=None,
                        help="CLIP weights for the CLIP feature space and CLIP score (default: --clip, the generator's own)")  # fmt: skip
    parser.add_argument("--eval-clip-model", default=None, help="open_clip model of --eval-clip (default: --clip-model)")
    parser.add_argument("--inception-weights", default=None,
                        help="InceptionV3 weights for FID/IS (default: torch hub's cache; without them the cells say so)")  # fmt: skip
    add_sampler_argument(parser, help="decoder sampler")
    parser.add_argument("--steps", default="50", help="decoder sampling steps, or 'all' (default: 50)")
    add_cfg_argument(parser)
    parser.add_argument("--threshold", type=float, default=0.995,
                        help="dynamic-thresholding percentile; 0 for static clipping (default: 0.995)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=50, help="images drawn per batch (default: 50)")
    add_device_arguments(parser)
    parser.add_argument("--out", default="runs/eval", help="output directory (default: runs/eval)")
    parser.add_argument("--force", action="store_true", help="redraw every variant instead of reusing finished ones")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "evaluate", __doc__, help="the evaluation table: every variant scored against real images")
    add_evaluate_options(parser)
    parser.set_defaults(run=lambda args: run(options_from(EvaluateOptions, apply_config(args))))


def apply_config(args: argparse.Namespace) -> argparse.Namespace:
    """Re-read the command line (``args.argv``, after the subcommand) with the YAML file's values as
    defaults: flags still win."""
    if not args.config:
        return args
    with open(args.config) as stream:
        values = yaml.safe_load(stream) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{args.config} must be a mapping of option names to values")
    parser = argparse.ArgumentParser(prog="t2i evaluate")
    add_evaluate_options(parser)
    known = {action.dest for action in parser._actions} - {"help", "config"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown key(s) {', '.join(unknown)} in {args.config}; valid keys: {', '.join(sorted(known))}")
    parser.set_defaults(**values)
    return parser.parse_args(args.argv)


def check_evaluate_args(options: EvaluateOptions) -> None:
    if options.n <= 0:
        raise ValueError(f"--n must be positive, got {options.n}")
    if not options.seeds:
        raise ValueError("Give at least one seed")
    if not 0 <= options.threshold < 1:
        raise ValueError(f"--threshold must be in [0, 1), got {options.threshold}")
    if options.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {options.batch_size}")
    check_writable(options.out, directory=True)
    from ..eval.variants import variant

    for name in options.variants:
        variant(name)  # unknown names fail before anything is loaded


def run(options: EvaluateOptions) -> None:
    from ..eval.clip_space import ClipInstrument
    from ..eval.evaluate import EvaluationSettings, Instruments, evaluate
    from ..eval.inception import InceptionInstrument, find_inception_weights
    from ..eval.judging import judge_accuracy
    from ..eval.reference import load_reference
    from ..eval.variants import EvalModels
    from ..nn.clip import create_clip, tokenizer_for
    from ..pipeline import load_judge

    check_evaluate_args(options)
    judge = load_judge(options.judge).net
    eval_clip, eval_model = options.eval_clip or options.clip, options.eval_clip_model or options.clip_model
    clip = ClipInstrument(create_clip(eval_model, eval_clip), tokenizer_for(eval_model), name=f"{eval_model} ({eval_clip})")
    inception = InceptionInstrument(find_inception_weights(options.inception_weights))
    print(f"reading {options.n} {options.split} and {options.n} {options.real_split} images of {options.data}")
    ref = load_reference(options.data, options.split, options.n, embeddings=options.embeddings)
    real = load_reference(options.data, options.real_split, options.n)
    accuracy = judge_accuracy(judge, ref.images, ref.metas)
    steps = options.steps if options.steps == "all" else int(options.steps)
    sampling = SamplingOptions(options.sampler, steps, options.cfg, options.threshold or None, options.batch_size, options.precision)
    settings = EvaluationSettings(options.n, list(options.seeds), list(options.variants), list(options.subset_sizes), sampling)
    paths = {"clip": options.clip, "translator": options.translator, "decoder": options.decoder, "upsampler": options.upsampler,
             "decoder_text": options.decoder_text, "score": options.score, "captioner": options.captioner}  # fmt: skip
    header = {
        "data": f"{options.data}: the first {options.n} {options.split} images and captions; real-vs-real set: the first "
        f"{options.n} {options.real_split} images",
        "judge": f"{options.judge}; its accuracy on these reference images: "
        + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()),
        "CLIP space": clip.name + (" — the generator's own CLIP, which flatters it" if eval_clip == options.clip else ""),
        "inception": inception.status,
        "checkpoints": ", ".join(f"{k} {v}" for k, v in paths.items()),
    }
    table = evaluate(settings, EvalModels(paths), ref, real, Instruments(judge, clip, inception), options.out, options.force, header)
    print(open(f"{options.out}/table.md").read())
    print(f"-> {options.out}/table.md, table.json, grids/ ({len(table['rows'])} rows)")
