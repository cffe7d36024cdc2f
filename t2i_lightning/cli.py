"""The ``t2i`` command: stage training through LightningCLI plus the project's own tools.

    t2i fit|validate|test|predict --config stages/X.yaml [--trainer.* ...]
    t2i data shapes|coco|folder|inspect ...
    t2i sample --prompt "a red circle" --out red.png
    t2i upsample --in small.png --out big.png
    t2i evaluate --config stages/evaluate.yaml

``lightning`` (also installed) is the same as ``t2i`` restricted to the LightningCLI
subcommands, so ``lightning fit --config stages/decoder.yaml`` works as users type it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .bench.stage_log import recorded
from .callbacks.finite_guard import NonFiniteLossError
from .data.shapes.captions import POSITION_PROB
from .demo_defaults import DEMO_CLIP, DEMO_EMBEDDINGS
from .lightning_cli import SUBCOMMANDS


def _data_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="make, import and inspect WebDataset shards")
    kinds = data.add_subparsers(dest="data_command", metavar="{shapes,coco,folder,inspect}", required=True)

    shapes = kinds.add_parser(
        "shapes",
        help="generate the embedded shapes dataset",
        description="Render shapes scenes with exact captions into WebDataset shards (deterministic, resumable).",
    )
    shapes.add_argument("--out", default="data/shapes", help="output directory (default: data/shapes)")
    shapes.add_argument("--train", type=int, default=20000, help="training samples (default: 20000)")
    shapes.add_argument("--val", type=int, default=1000, help="validation samples (default: 1000)")
    shapes.add_argument("--test", type=int, default=1000, help="test samples (default: 1000)")
    shapes.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    shapes.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    shapes.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    shapes.add_argument(
        "--position-prob", type=float, default=POSITION_PROB,
        help=f"chance that a caption names a single object's position (default: {POSITION_PROB})",
    )  # fmt: skip
    shapes.add_argument(
        "--format", choices=("png", "jpg"), default="png", help="image encoding (default: png)"
    )
    shapes.add_argument(
        "--samples-per-shard", type=int, default=1000, help="samples per shard (default: 1000)"
    )
    shapes.add_argument(
        "--overwrite", action="store_true", help="replace a dataset made with other arguments"
    )

    def add_import_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, help="output directory for the shards")
        parser.add_argument("--size", type=int, default=256, help="output image side (default: 256)")
        parser.add_argument(
            "--resize",
            choices=("border", "center-crop"),
            default="border",
            help="border: pad to a square with white, then resize (default); center-crop: crop the centre",
        )
        parser.add_argument(
            "--format", choices=("png", "jpg"), default="png", help="image encoding (default: png)"
        )
        parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")

    coco = kinds.add_parser(
        "coco", help="import COCO captions", description="Import COCO images and captions."
    )
    coco.add_argument("--images", required=True, help="directory of COCO images (e.g. val2017/)")
    coco.add_argument("--captions", required=True, help="COCO captions JSON (e.g. captions_val2017.json)")
    coco.add_argument("--split", default=None, help="split name (default: from the captions file name)")
    add_import_options(coco)

    folder = kinds.add_parser(
        "folder",
        help="import a folder of images with captions",
        description="Import images with captions from sidecar .txt files or a .csv/.jsonl table of file,caption.",
    )
    folder.add_argument("--images", required=True, help="directory of images (searched recursively)")
    folder.add_argument(
        "--captions", default=None, help="file,caption table (.csv or .jsonl); default: sidecar .txt"
    )
    folder.add_argument("--split", default="train", help="split name (default: train)")
    add_import_options(folder)

    inspect = kinds.add_parser("inspect", help="counts, captions and a grid of a shard dataset")
    inspect.add_argument("path", help="dataset directory, .tar file, glob or brace pattern")
    inspect.add_argument("--out", default=None, help="write a grid of images with captions to this PNG")
    inspect.add_argument("--n", type=int, default=16, help="images in the grid (default: 16)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2i",
        description="t2i_lightning: staged text-to-image diffusion with PyTorch Lightning.",
        epilog="Stage commands take LightningCLI arguments: t2i fit --config stages/X.yaml [--trainer.max_steps N]. "
        "Run `t2i fit --help` for all of them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        subparsers.add_parser(name, help=f"LightningCLI {name} of a stage: {name} --config stages/X.yaml ...")
    _data_parser(subparsers)
    embed_text = subparsers.add_parser(
        "embed-text",
        help="translate captions to CLIP image embeddings and show the nearest validation images' captions",
    )
    embed_text.add_argument("prompts", nargs="+", help="one or more captions")
    embed_text.add_argument(
        "--translator", default="runs/translator/checkpoints/last.ckpt", help="translator checkpoint"
    )
    embed_text.add_argument(
        "--clip", default=None, help="CLIP checkpoint or weights (default: the one the translator recorded)"
    )
    embed_text.add_argument(
        "--emb", default=None, help="embedding directory to search (default: the translator's)"
    )
    embed_text.add_argument("--k", type=int, default=5, help="neighbours to show (default: 5)")
    probe = subparsers.add_parser(
        "probe-layout",
        help="how much of a shapes scene (objects per cell, their colours, the background) CLIP image embeddings hold",
    )
    probe.add_argument("--emb", default=DEMO_EMBEDDINGS, help=f"embedding directory (default: {DEMO_EMBEDDINGS})")
    probe.add_argument("--steps", type=int, default=300, help="full-batch Adam steps of the linear probe (default: 300)")
    probe.add_argument("--out", default=None, help="also write the scores to this JSON file")
    from .decoder_report_command import add_evaluate_decoder_parser
    from .evaluate_command import add_evaluate_parser
    from .sample_command import add_sample_parser
    from .score_command import add_evaluate_guidance_parser
    from .upsample_command import add_evaluate_upsampler_parser, add_upsample_parser

    add_sample_parser(subparsers)
    add_upsample_parser(subparsers)
    add_evaluate_upsampler_parser(subparsers)
    add_evaluate_decoder_parser(subparsers)
    add_evaluate_guidance_parser(subparsers)
    add_evaluate_parser(subparsers)
    bench = subparsers.add_parser(
        "bench", help="benchmarks as ratios against a baseline run side by side",
        description="Without a subcommand: every benchmark (decoder training through Lightning vs a bare loop, "
        "input pipeline vs training, DDIM vs DDPM and batched guidance, extraction vs a bare loop, each other "
        "stage's training in bf16-mixed vs float32, the demo's stage times and memory) in one table, also written as JSON.",
    )  # fmt: skip
    bench.add_argument("--quick", action="store_true", help="smoke-test sizes (a minute or two; not the README's numbers)")
    bench.add_argument("--out", default="runs/bench/bench.json", help="JSON results (default: runs/bench/bench.json)")
    bench.add_argument("--config", default="stages/decoder.yaml", help="decoder stage config: U-Net, batch, data")
    bench.add_argument("--data", default="data/shapes", help="image shards (default: data/shapes)")
    bench.add_argument("--decoder", default=None, help="decoder checkpoint (default: random weights)")
    bench.add_argument("--embeddings", default=None, help="embedding directory: with --decoder, measure sampler quality")
    bench.add_argument("--clip-model", default=DEMO_CLIP, help="open_clip model name for extraction")
    bench.add_argument("--clip", default=None, help="CLIP weights for extraction (default: random weights)")
    bench.add_argument("--stage-log", default=None, help="stage timings written by `make` (runs/bench/stages.jsonl)")
    bench.add_argument("--precision-configs", nargs="*", default=None,
                       help="stage configs whose training step is timed in bf16-mixed vs float32 on --data (default: "
                       "stages/{clip,upsampler,score,captioner,judge}.yaml; the flag alone: none)")  # fmt: skip
    kinds = bench.add_subparsers(dest="bench_command", metavar="{extraction,sampling,gpu}")
    extraction = kinds.add_parser(
        "extraction", help="embedding extraction vs a bare encode loop on the same batches"
    )
    extraction.add_argument("--data", default="data/shapes", help="image shards (default: data/shapes)")
    extraction.add_argument("--model", default=DEMO_CLIP, help="open_clip model name")
    extraction.add_argument("--clip", default="runs/clip/checkpoints/last.ckpt", help="CLIP weights")
    extraction.add_argument("--shards", type=int, default=2, help="shards to use (default: 2)")
    extraction.add_argument("--batch-size", type=int, default=256)
    extraction.add_argument("--workers", type=int, default=1)
    sampling = kinds.add_parser("sampling", help="seconds per image: DDIM-K vs DDPM over all steps, side by side")
    sampling.add_argument("--decoder", default=None, help="decoder checkpoint (default: stages/decoder.yaml's U-Net, random weights)")
    sampling.add_argument("--n", type=int, default=4, help="images per sampler (default: 4)")
    sampling.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps (default: 50)")
    sampling.add_argument("--ddpm-steps", default="all", help="DDPM steps (default: all, i.e. T)")
    gpu = kinds.add_parser(
        "gpu", help="accelerator rows: decoder step img/s and bf16 MFU (demo and paper configs), Lightning vs bare, "
        "sampling, extraction", description="Needs a GPU (--device cpu runs the same code as a smoke test).",
    )  # fmt: skip
    gpu.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    gpu.add_argument("--configs", nargs="+", default=["stages/decoder.yaml", "stages/paper/decoder.yaml"],
                     help="decoder stage configs to time (default: the demo's and the study's)")  # fmt: skip
    gpu.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                     help="batch sizes for every config (default: each config's own and 8 times it)")  # fmt: skip
    gpu.add_argument("--data", default="data/shapes", help="image shards for the extraction rows ('' for none)")
    gpu.add_argument("--clip-models", nargs="+", default=[DEMO_CLIP, "ViT-B-32"],
                     help="open_clip models for extraction, random weights (default: the demo's and ViT-B-32)")  # fmt: skip
    gpu.add_argument("--quick", action="store_true", help="smoke-test sizes (not the README's numbers)")
    gpu.add_argument("--out", default="runs/bench/gpu.json", help="JSON results (default: runs/bench/gpu.json)")
    return parser


def _run_embed_text(args: argparse.Namespace) -> None:
    import os

    from .eval.nearest import load_split_embeddings, nearest
    from .pipeline import TextToImageEmbedding

    if args.k <= 0:
        raise ValueError(f"--k must be positive, got {args.k}")
    chain = TextToImageEmbedding.from_checkpoints(args.translator, args.clip)
    embeddings = chain(args.prompts)
    texts = chain.text_embeddings(args.prompts)
    emb_dir = args.emb or os.path.dirname(chain.translator.hparams.stats or "")
    keys, bank, captions = load_split_embeddings(emb_dir, "val")
    scores, indices = nearest(embeddings, bank, args.k)
    for prompt, emb, text, row_scores, row in zip(
        args.prompts, embeddings, texts, scores, indices, strict=True
    ):
        cosine = float(torch.nn.functional.cosine_similarity(emb, text, dim=0))
        print(f"{prompt!r}: image embedding norm {emb.norm():.3f}, cosine to its text embedding {cosine:.3f}")
        print(f"  nearest of {len(keys)} validation images ({emb_dir}):")
        for score, i in zip(row_scores.tolist(), row.tolist(), strict=True):
            print(f"    {score:.3f}  {keys[i]}: {captions[i]}")


def _run_probe_layout(args: argparse.Namespace) -> None:
    from .data.shards import write_json_atomic
    from .eval.layout_probe import probe_embedding_dir

    if args.steps <= 0:
        raise ValueError(f"--steps must be positive, got {args.steps}")
    scores = probe_embedding_dir(args.emb, steps=args.steps)
    print(f"Linear probe on the image embeddings in {args.emb} (trained on train, scored on val; L2 {scores['weight_decay']:g}):")
    print(f"{'what':<18}{'probe':>8}{'baseline':>10}")
    for name in ("occupancy", "slot_occupied", "colour_occupied", "background"):
        print(f"{name:<18}{scores[name]:>8.3f}{scores[name + '_baseline']:>10.3f}")
    if args.out:
        write_json_atomic(args.out, {"emb": str(args.emb), "steps": args.steps, **scores})


def _run_sample(args: argparse.Namespace) -> None:
    from .sample_command import run_sample

    run_sample(args)


def _run_upsample(args: argparse.Namespace) -> None:
    from .upsample_command import run_evaluate_upsampler, run_upsample

    (run_upsample if args.command == "upsample" else run_evaluate_upsampler)(args)


def _run_evaluate_decoder(args: argparse.Namespace) -> None:
    from .decoder_report_command import run_evaluate_decoder

    run_evaluate_decoder(args)


def _run_evaluate(args: argparse.Namespace) -> None:
    from .evaluate_command import run_evaluate

    run_evaluate(args, args.argv[1:])


def _run_evaluate_guidance(args: argparse.Namespace) -> None:
    from .score_command import run_evaluate_guidance

    run_evaluate_guidance(args)


def _run_bench(args: argparse.Namespace) -> None:
    if args.bench_command is None:
        from .bench.report import PRECISION_CONFIGS, run_benchmarks, table
        from .data.shards import check_writable, write_json_atomic

        check_writable(args.out)
        results = run_benchmarks(
            quick=args.quick, config=args.config, data=args.data, decoder=args.decoder, embeddings=args.embeddings,
            clip_model=args.clip_model, clip=args.clip, stage_log=args.stage_log,
            precision_configs=PRECISION_CONFIGS if args.precision_configs is None else tuple(args.precision_configs),
        )  # fmt: skip
        write_json_atomic(args.out, results)
        print(table(results))
        print(f"\nwritten to {args.out}")
        return
    if args.bench_command == "gpu":
        _run_bench_gpu(args)
        return
    if args.bench_command == "sampling":
        from .bench.sampling import bench_sampling

        if args.n <= 0:
            raise ValueError(f"--n must be positive, got {args.n}")
        r = bench_sampling(args.decoder, args.n, args.ddim_steps, args.ddpm_steps)
        print(
            f"sampling {r['n']} images at {r['image_size']}px ({r['threads']} torch threads): "
            f"DDIM-{r['ddim_steps']} {r['ddim_s_per_image']:.2f} s/image, DDPM-{r['ddpm_steps']} "
            f"{r['ddpm_s_per_image']:.2f} s/image: DDIM is {r['ratio']:.1f}x faster"
        )
        return
    from .bench.extraction import bench_extraction

    result = bench_extraction(args.data, args.model, args.clip, args.shards, args.batch_size, args.workers)
    print(
        f"extraction: {result['images']} images, {result['extraction_img_per_s']:.1f} img/s through Lightning predict "
        f"+ shard writing vs {result['bare_img_per_s']:.1f} img/s for bare encode_image/encode_text on the same "
        f"batches: ratio {result['ratio']:.3f} (torch threads {result['threads']}, {result['num_workers']} loader worker(s))"
    )


def _run_bench_gpu(args: argparse.Namespace) -> None:
    from .bench.gpu import gpu_table, run_gpu_benchmarks
    from .data.shards import check_writable, resolve_shards, write_json_atomic

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("t2i bench gpu: no CUDA device here (torch.cuda.is_available() is False); "
                           "`--device cpu` runs the same code on the CPU as a smoke test")  # fmt: skip
    if any(b <= 0 for b in args.batch_sizes or []):
        raise ValueError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    for config in args.configs:
        if not os.path.isfile(config):
            raise FileNotFoundError(f"Decoder config not found: {config}")
    if args.data:
        resolve_shards(args.data)  # names a missing or empty dataset before any model is built
    check_writable(args.out)
    batch_sizes = {config: args.batch_sizes for config in args.configs} if args.batch_sizes else None
    results = run_gpu_benchmarks(device=args.device, configs=tuple(args.configs), batch_sizes=batch_sizes,
                                 data=args.data or None, clip_models=tuple(args.clip_models), quick=args.quick)  # fmt: skip
    write_json_atomic(args.out, results)
    print(gpu_table(results))
    print(f"\nwritten to {args.out}")


def _run_data(args: argparse.Namespace) -> None:
    from .data.shards import check_writable

    if args.data_command == "inspect" and args.n <= 0:
        raise ValueError(f"--n must be positive, got {args.n}")
    if args.out:
        check_writable(args.out, directory=args.data_command != "inspect")
    if args.data_command == "shapes":
        from .data.shapes.generate import ShapesConfig, generate_shapes

        config = ShapesConfig(args.seed, args.size, args.format, args.samples_per_shard, args.position_prob)
        index = generate_shapes(
            args.out,
            {"train": args.train, "val": args.val, "test": args.test},
            config,
            args.workers,
            args.overwrite,
        )
        counts = ", ".join(f"{split} {entry['count']}" for split, entry in index["splits"].items())
        print(f"shapes dataset in {args.out}: {counts}")
    elif args.data_command in ("coco", "folder"):
        from .data import importers

        options = dict(size=args.size, resize=args.resize, image_format=args.format, workers=args.workers)
        if args.data_command == "coco":
            report = importers.import_coco(args.images, args.captions, args.out, split=args.split, **options)
        else:
            report = importers.import_folder(
                args.images, args.out, captions=args.captions, split=args.split, **options
            )
        print(report.summary())
    elif args.data_command == "inspect":
        from .data.inspect import inspect_dataset

        print(inspect_dataset(args.path, args.out, n_images=args.n))


# A path that is a file where a directory must be (or the reverse), or not writable, is the user's to fix.
USER_ERRORS = (
    FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
    NonFiniteLossError,
)  # fmt: skip
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


@contextlib.contextmanager
def reported_as_user_error(command: str) -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and a non-zero exit (no traceback unless
    ``T2I_DEBUG`` is set); a SIGTERM-stopped fit exits with 143 so that make does not mark it done."""
    try:
        yield
    except SIGTERMException:
        sys.exit(SIGTERM_EXIT_CODE)
    except USER_ERRORS as error:
        if os.environ.get("T2I_DEBUG"):
            raise
        sys.exit(f"{command}: error: {error}\n(set T2I_DEBUG=1 for a traceback)")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``t2i``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with recorded(argv):
        _dispatch(argv)


def _dispatch(argv: list[str]) -> None:
    if argv and argv[0] in SUBCOMMANDS:
        from .lightning_cli import run_lightning

        with reported_as_user_error(f"t2i {argv[0]}"):
            run_lightning(argv)
        return
    args = build_parser().parse_args(argv)
    args.argv = argv
    command = " ".join(
        filter(
            None, [args.command, getattr(args, "data_command", None) or getattr(args, "bench_command", None)]
        )
    )
    commands = {"embed-text": _run_embed_text, "bench": _run_bench, "sample": _run_sample,
                "upsample": _run_upsample, "evaluate-upsampler": _run_upsample,
                "evaluate-decoder": _run_evaluate_decoder,
                "evaluate-guidance": _run_evaluate_guidance, "evaluate": _run_evaluate,
                "probe-layout": _run_probe_layout}  # fmt: skip
    with reported_as_user_error(f"t2i {command}"):
        commands.get(args.command, _run_data)(args)


def lightning_main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning``: the LightningCLI subcommands of ``t2i``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        from .lightning_cli import run_lightning

        if not argv or argv[0] in ("-h", "--help"):
            run_lightning(["--help"])
            return
        sys.exit(
            f"lightning: unknown command {argv[0]!r}; use one of {', '.join(SUBCOMMANDS)} (e.g. `lightning fit --config stages/decoder.yaml`)"
        )
    main(argv)
