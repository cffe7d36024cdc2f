"""``t2i evaluate --config stages/evaluate.yaml``: the evaluation table (:mod:`t2i_lightning.eval.evaluate`). Draw
each variant for the same reference captions and score it: judge- and CLIP-space Fréchet distance, KID,
precision/recall; CLIP score; exact alignment; FID/IS/KID/precision/recall in Inception space when Inception
weights are present; PSNR/SSIM where a ground truth exists; seconds per image.

    t2i evaluate --config stages/evaluate.yaml                 # -> runs/eval/table.md, table.json, grids/
    t2i evaluate --config stages/evaluate.yaml --n 50 --variants real full --force
    t2i evaluate --config stages/paper/evaluate.yaml --data data/coco --inception-weights PATH --device cuda

On real photos (a COCO import) there is no judge: the reference metadata are not shapes scenes, so the
judge-space columns and exact alignment are left out and the header says why (``--judge none`` leaves
them out on shapes too). A split with fewer images than ``--n`` is used whole, N cut to it, and said.
The models run on ``--device``; the reference features are cached under ``<out>/reference-cache/``.

The YAML holds any of the options below by their names with underscores (``decoder_text``,
``subset_sizes``); a key that is not an option is an error; command-line flags override the file.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..eval.names import FIXED_VARIANTS
from ..registry import DEMO_CLIP, DEMO_EMBEDDINGS, default_checkpoint
from .options import add_cfg_argument, add_command, add_device_arguments, add_sampler_argument, options_from

if TYPE_CHECKING:
    import torch

    from ..eval.reference import ReferenceSet
    from ..nn.judge import SceneJudge

NO_JUDGE = "none"


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
    decoder_latent: str
    decoder_text_latent: str
    autoencoder: str
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
CHECKPOINTS = ("clip", "translator", "decoder", "upsampler", "decoder_text", "score", "captioner", "decoder_latent",
               "decoder_text_latent", "autoencoder")  # the stages a row may need (fields of EvaluateOptions)  # fmt: skip


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
                        help=f"rows: {', '.join(FIXED_VARIANTS)}, cfg_<scale>, score_guided_<lambda> "
                             f"(default: {' '.join(DEFAULT_VARIANTS)})")  # fmt: skip
    for stage in CHECKPOINTS:
        default, name = default_checkpoint(stage), stage.replace("_", "-")
        parser.add_argument(f"--{name}", default=default, help=f"{name} checkpoint (default: {default})")
    parser.add_argument("--judge", default=default_checkpoint("judge"),
                        help=f"judge checkpoint, or '{NO_JUDGE}' for no judge-space columns (default: "
                             f"{default_checkpoint('judge')}; not read where the data are not shapes scenes)")  # fmt: skip
    parser.add_argument("--clip-model", default=DEMO_CLIP, help="open_clip model of --clip")
    parser.add_argument("--eval-clip", default=None,
                        help="CLIP weights for the CLIP feature space and CLIP score (default: --clip, the generator's own)")  # fmt: skip
    parser.add_argument("--eval-clip-model", default=None, help="open_clip model of --eval-clip (default: --clip-model)")
    parser.add_argument("--inception-weights", default=None,
                        help="torch-fidelity's InceptionV3 state dict for FID/IS/KID/precision/recall (default: torch "
                             "hub's cache; without them the cells say so)")  # fmt: skip
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
    import yaml

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
    from ..data.shards import check_writable
    from ..eval.variants import variant
    from ..training.stage_loading import checkpoint_stage

    check_writable(options.out, directory=True)
    for name in options.variants:
        variant(name)  # unknown names fail before anything is loaded
    if options.judge != NO_JUDGE and os.path.isfile(options.judge):
        checkpoint_stage(options.judge, "judge")  # another stage's checkpoint fails before anything is loaded


def judge_for(options: EvaluateOptions, ref: ReferenceSet) -> tuple[SceneJudge | None, str]:
    """The judge on ``options.device`` (None for none) and the header's line on it: its accuracy on the
    reference images, or why there is no judge (``--judge none``, or data that are not shapes scenes)."""
    from ..eval.judging import judge_accuracy, shapes_scenes
    from ..pipeline import load_judge

    if options.judge == NO_JUDGE:
        return None, f"none (--judge {NO_JUDGE}): no judge-space columns, no exact alignment"
    if not shapes_scenes(ref.metas):
        return None, (f"none: {options.data} is not a shapes dataset (its judge-space columns and exact alignment "
                      "need shapes metadata)")  # fmt: skip
    judge = load_judge(options.judge, options.device).net
    accuracy = judge_accuracy(judge, ref.images, ref.metas)
    return judge, f"{options.judge}; its accuracy on these reference images: " + ", ".join(
        f"{k} {v:.3f}" for k, v in accuracy.items()
    )


def path_check_line(options: EvaluateOptions) -> str | None:
    """The header's warning when a CLIP the table depends on has random weights (``t2i random-clip``): then
    every number checks that the path runs and none is a result; None otherwise."""
    from ..nn.random_clip import random_init_of

    clips = {"the generator's CLIP": options.clip, "the evaluation CLIP": options.eval_clip or options.clip}
    marks = {role: random_init_of(path) for role, path in clips.items()}
    random = [f"{role} ({clips[role]}: random {mark})" for role, mark in marks.items() if mark]
    if not random:
        return None
    return f"random weights in {', '.join(random)}: every number below checks that the path runs, none is a result"


def run(options: EvaluateOptions) -> None:
    from ..eval.clip_space import ClipInstrument
    from ..eval.evaluate import EvaluationSettings, Instruments, evaluate
    from ..eval.feature_cache import weights_identity
    from ..eval.inception import InceptionInstrument, find_inception_weights
    from ..eval.reference import load_evaluation_sets
    from ..eval.variants import EvalModels, SamplingOptions, variant
    from ..nn.clip import create_clip, tokenizer_for

    check_evaluate_args(options)
    device = options.device
    real_split = options.real_split if "real" in options.variants else None
    embeddings = options.embeddings if any(variant(name).reference_embeddings for name in options.variants) else None
    eval_clip, eval_model = options.eval_clip or options.clip, options.eval_clip_model or options.clip_model
    clip = ClipInstrument(create_clip(eval_model, eval_clip).to(device), tokenizer_for(eval_model),
                          name=f"{eval_model} ({eval_clip})")  # fmt: skip
    inception_weights = find_inception_weights(options.inception_weights)
    inception = InceptionInstrument(inception_weights, device)
    print(f"reading up to {options.n} {options.split}" + (f" and {real_split}" if real_split else "")
          + f" images of {options.data}")  # fmt: skip
    ref, real, notes = load_evaluation_sets(options.data, options.split, options.n, real_split, embeddings)
    for note in notes:
        print(note)
    judge, judge_line = judge_for(options, ref)
    identity = {"clip": weights_identity(eval_clip, device, model=eval_model), "inception": weights_identity(inception_weights, device)}
    if judge is not None:
        identity["judge"] = weights_identity(options.judge, device)
    steps = options.steps if options.steps == "all" else int(options.steps)
    sampling = SamplingOptions(options.sampler, steps, options.cfg, options.threshold or None, options.batch_size, options.precision)
    settings = EvaluationSettings(len(ref), list(options.seeds), list(options.variants), list(options.subset_sizes), sampling)
    paths = {stage: getattr(options, stage) for stage in CHECKPOINTS}
    warning = path_check_line(options)
    header = {"PATH CHECK": warning} if warning else {}
    header |= {
        "data": f"{options.data}: the first {len(ref)} {options.split} images and captions"
        + (f"; real-vs-real set: the first {len(ref)} {real_split} images" if real_split else ""),
        "judge": judge_line,
        "CLIP space": clip.name + (" — the generator's own CLIP, which flatters it" if eval_clip == options.clip else ""),
        "inception": inception.status,
        "device": str(device),
        "checkpoints": ", ".join(f"{k} {v}" for k, v in paths.items()),
    }
    instruments = Instruments(judge, clip, inception, identity)
    table = evaluate(settings, EvalModels(paths, device), ref, real, instruments, options.out, options.force, header)
    print(open(f"{options.out}/table.md").read())
    print(f"-> {options.out}/table.md, table.json, grids/ ({len(table['rows'])} rows)")
