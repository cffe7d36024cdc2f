"""``t2i evaluate --config stages/evaluate.yaml``: the evaluation table (:mod:`t2i_lightning.eval.evaluate`).

    t2i evaluate --config stages/evaluate.yaml                 # -> runs/eval/table.md, table.json, grids/
    t2i evaluate --config stages/evaluate.yaml --n 50 --variants real full --force

The YAML holds any of the options below by their names with underscores (``decoder_text``,
``subset_sizes``); a key that is not an option is an error; command-line flags override the file.
"""

from __future__ import annotations

import argparse

import yaml

from .data.shards import check_writable
from .demo_defaults import DEMO_CLIP, DEMO_EMBEDDINGS
from .eval.variants import FIXED, SamplingOptions
from .precision_option import add_precision_argument

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
    for name, target in (("clip", "clip"), ("translator", "translator"), ("decoder", "decoder"),
                         ("upsampler", "upsampler"), ("decoder-text", "decoder_text"), ("score", "score"),
                         ("captioner", "captioner"), ("judge", "judge")):  # fmt: skip
        default = f"runs/{target}/checkpoints/last.ckpt"
        parser.add_argument(f"--{name}", default=default, help=f"{name} checkpoint (default: {default})")
    parser.add_argument("--clip-model", default=DEMO_CLIP, help="open_clip model of --clip")
    parser.add_argument("--eval-clip", default=None,
                        help="CLIP weights for the CLIP feature space and CLIP score (default: --clip, the generator's own)")  # fmt: skip
    parser.add_argument("--eval-clip-model", default=None, help="open_clip model of --eval-clip (default: --clip-model)")
    parser.add_argument("--inception-weights", default=None,
                        help="InceptionV3 weights for FID/IS (default: torch hub's cache; without them the cells say so)")  # fmt: skip
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="decoder sampler (default: ddim)")
    parser.add_argument("--steps", default="50", help="decoder sampling steps, or 'all' (default: 50)")
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (default: 3)")
    parser.add_argument("--threshold", type=float, default=0.995,
                        help="dynamic-thresholding percentile; 0 for static clipping (default: 0.995)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=50, help="images drawn per batch (default: 50)")
    add_precision_argument(parser)
    parser.add_argument("--out", default="runs/eval", help="output directory (default: runs/eval)")
    parser.add_argument("--force", action="store_true", help="redraw every variant instead of reusing finished ones")


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="the evaluation table: every variant scored against real images",
        description="Draw each variant for the same reference captions and score it: judge- and CLIP-space "
        "Fréchet distance, KID, precision/recall; CLIP score; exact alignment; FID/IS when Inception weights "
        "are present; PSNR/SSIM where a ground truth exists; seconds per image.",
    )  # fmt: skip
    add_evaluate_options(parser)


def apply_config(args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Re-read the command line with the YAML file's values as defaults (flags still win)."""
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
    return parser.parse_args(argv)


def check_evaluate_args(args: argparse.Namespace) -> None:
    if args.n <= 0:
        raise ValueError(f"--n must be positive, got {args.n}")
    if not args.seeds:
        raise ValueError("Give at least one seed")
    if args.cfg < 0:
        raise ValueError(f"--cfg must be >= 0, got {args.cfg}")
    if not 0 <= args.threshold < 1:
        raise ValueError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    check_writable(args.out, directory=True)
    from .eval.variants import variant

    for name in args.variants:
        variant(name)  # unknown names fail before anything is loaded


def run_evaluate(args: argparse.Namespace, argv: list[str]) -> None:
    from .eval.clip_space import ClipInstrument
    from .eval.evaluate import EvaluationSettings, Instruments, evaluate
    from .eval.inception import InceptionInstrument, find_inception_weights
    from .eval.judging import judge_accuracy
    from .eval.reference import load_reference
    from .eval.variants import EvalModels
    from .nn.clip import create_clip, tokenizer_for
    from .pipeline import load_judge

    args = apply_config(args, argv)
    check_evaluate_args(args)
    judge = load_judge(args.judge).net
    eval_clip, eval_model = args.eval_clip or args.clip, args.eval_clip_model or args.clip_model
    clip = ClipInstrument(create_clip(eval_model, eval_clip), tokenizer_for(eval_model), name=f"{eval_model} ({eval_clip})")
    inception = InceptionInstrument(find_inception_weights(args.inception_weights))
    print(f"reading {args.n} {args.split} and {args.n} {args.real_split} images of {args.data}")
    ref = load_reference(args.data, args.split, args.n, embeddings=args.embeddings)
    real = load_reference(args.data, args.real_split, args.n)
    accuracy = judge_accuracy(judge, ref.images, ref.metas)
    steps = args.steps if args.steps == "all" else int(args.steps)
    options = SamplingOptions(args.sampler, steps, args.cfg, args.threshold or None, args.batch_size, args.precision)
    settings = EvaluationSettings(args.n, list(args.seeds), list(args.variants), list(args.subset_sizes), options)
    paths = {"clip": args.clip, "translator": args.translator, "decoder": args.decoder, "upsampler": args.upsampler,
             "decoder_text": args.decoder_text, "score": args.score, "captioner": args.captioner}  # fmt: skip
    header = {
        "data": f"{args.data}: the first {args.n} {args.split} images and captions; real-vs-real set: the first "
        f"{args.n} {args.real_split} images",
        "judge": f"{args.judge}; its accuracy on these reference images: "
        + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()),
        "CLIP space": clip.name + (" — the generator's own CLIP, which flatters it" if eval_clip == args.clip else ""),
        "inception": inception.status,
        "checkpoints": ", ".join(f"{k} {v}" for k, v in paths.items()),
    }
    table = evaluate(settings, EvalModels(paths), ref, real, Instruments(judge, clip, inception), args.out, args.force, header)
    print(open(f"{args.out}/table.md").read())
    print(f"-> {args.out}/table.md, table.json, grids/ ({len(table['rows'])} rows)")
