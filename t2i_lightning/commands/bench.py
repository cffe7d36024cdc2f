"""``t2i bench``: speed and memory as ratios against a baseline run side by side. Without a subcommand:
every benchmark (decoder training through Lightning vs a bare loop, input pipeline vs training, DDIM vs
DDPM and batched guidance, extraction vs a bare loop, each other stage's training in bf16-mixed vs
float32, ``t2i --help`` vs a bare interpreter, the demo's stage times and memory) in one table, also
written as JSON.

    t2i bench --out runs/bench/bench.json            # every benchmark in one table
    t2i bench extraction|sampling|gpu|startup ...    # one of them
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from ..registry import DEMO_CLIP, default_checkpoint
from .options import add_command, options_from


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    quick: bool
    out: str
    config: str
    data: str
    decoder: str | None
    embeddings: str | None
    clip_model: str
    clip: str | None
    stage_log: str | None
    precision_configs: list[str] | None


@dataclass(frozen=True, kw_only=True)
class ExtractionBenchOptions:
    data: str
    model: str
    clip: str
    shards: int
    batch_size: int
    workers: int


@dataclass(frozen=True, kw_only=True)
class SamplingBenchOptions:
    decoder: str | None
    n: int
    ddim_steps: int
    ddpm_steps: str


@dataclass(frozen=True, kw_only=True)
class GpuBenchOptions:
    device: str
    configs: list[str]
    batch_sizes: list[int] | None
    data: str
    clip_models: list[str]
    quick: bool
    out: str


@dataclass(frozen=True, kw_only=True)
class StartupBenchOptions:
    repeats: int


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = add_command(subparsers, "bench", __doc__, help="benchmarks as ratios against a baseline run side by side")
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
    bench.set_defaults(run=lambda args: run_all(options_from(BenchOptions, args)))
    kinds = bench.add_subparsers(dest="bench_command", metavar="{extraction,sampling,gpu,startup}")
    extraction = kinds.add_parser(
        "extraction", help="embedding extraction vs a bare encode loop on the same batches"
    )
    extraction.add_argument("--data", default="data/shapes", help="image shards (default: data/shapes)")
    extraction.add_argument("--model", default=DEMO_CLIP, help="open_clip model name")
    extraction.add_argument("--clip", default=default_checkpoint("clip"), help="CLIP weights")
    extraction.add_argument("--shards", type=int, default=2, help="shards to use (default: 2)")
    extraction.add_argument("--batch-size", type=int, default=256)
    extraction.add_argument("--workers", type=int, default=1)
    extraction.set_defaults(run=lambda args: run_extraction(options_from(ExtractionBenchOptions, args)))
    sampling = kinds.add_parser("sampling", help="seconds per image: DDIM-K vs DDPM over all steps, side by side")
    sampling.add_argument("--decoder", default=None, help="decoder checkpoint (default: stages/decoder.yaml's U-Net, random weights)")
    sampling.add_argument("--n", type=int, default=4, help="images per sampler (default: 4)")
    sampling.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps (default: 50)")
    sampling.add_argument("--ddpm-steps", default="all", help="DDPM steps (default: all, i.e. T)")
    sampling.set_defaults(run=lambda args: run_sampling(options_from(SamplingBenchOptions, args)))
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
    gpu.set_defaults(run=lambda args: run_gpu(options_from(GpuBenchOptions, args)))
    startup = kinds.add_parser("startup", help="the command line's start-up: `t2i --help` vs `python -c pass`, side by side")
    startup.add_argument("--repeats", type=int, default=5, help="runs of each, alternated (default: 5)")
    startup.set_defaults(run=lambda args: run_startup(options_from(StartupBenchOptions, args)))


def run_all(options: BenchOptions) -> None:
    from ..bench.report import PRECISION_CONFIGS, run_benchmarks, table
    from ..data.shards import check_writable, write_json_atomic

    check_writable(options.out)
    results = run_benchmarks(
        quick=options.quick, config=options.config, data=options.data, decoder=options.decoder, embeddings=options.embeddings,
        clip_model=options.clip_model, clip=options.clip, stage_log=options.stage_log,
        precision_configs=PRECISION_CONFIGS if options.precision_configs is None else tuple(options.precision_configs),
    )  # fmt: skip
    write_json_atomic(options.out, results)
    print(table(results))
    print(f"\nwritten to {options.out}")


def run_sampling(options: SamplingBenchOptions) -> None:
    from ..bench.sampling import bench_sampling

    if options.n <= 0:
        raise ValueError(f"--n must be positive, got {options.n}")
    r = bench_sampling(options.decoder, options.n, options.ddim_steps, options.ddpm_steps)
    print(
        f"sampling {r['n']} images at {r['image_size']}px ({r['threads']} torch threads): "
        f"DDIM-{r['ddim_steps']} {r['ddim_s_per_image']:.2f} s/image, DDPM-{r['ddpm_steps']} "
        f"{r['ddpm_s_per_image']:.2f} s/image: DDIM is {r['ratio']:.1f}x faster"
    )


def run_extraction(options: ExtractionBenchOptions) -> None:
    from ..bench.extraction import bench_extraction

    result = bench_extraction(options.data, options.model, options.clip, options.shards, options.batch_size, options.workers)
    print(
        f"extraction: {result['images']} images, {result['extraction_img_per_s']:.1f} img/s through Lightning predict "
        f"+ shard writing vs {result['bare_img_per_s']:.1f} img/s for bare encode_image/encode_text on the same "
        f"batches: ratio {result['ratio']:.3f} (torch threads {result['threads']}, {result['num_workers']} loader worker(s))"
    )


def run_gpu(options: GpuBenchOptions) -> None:
    import torch

    from ..bench.gpu import gpu_table, run_gpu_benchmarks
    from ..data.shards import check_writable, resolve_shards, write_json_atomic

    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("t2i bench gpu: no CUDA device here (torch.cuda.is_available() is False); "
                           "`--device cpu` runs the same code on the CPU as a smoke test")  # fmt: skip
    if any(b <= 0 for b in options.batch_sizes or []):
        raise ValueError(f"--batch-sizes must be positive, got {options.batch_sizes}")
    for config in options.configs:
        if not os.path.isfile(config):
            raise FileNotFoundError(f"Decoder config not found: {config}")
    if options.data:
        resolve_shards(options.data)  # names a missing or empty dataset before any model is built
    check_writable(options.out)
    batch_sizes = {config: options.batch_sizes for config in options.configs} if options.batch_sizes else None
    results = run_gpu_benchmarks(device=options.device, configs=tuple(options.configs), batch_sizes=batch_sizes,
                                 data=options.data or None, clip_models=tuple(options.clip_models), quick=options.quick)  # fmt: skip
    write_json_atomic(options.out, results)
    print(gpu_table(results))
    print(f"\nwritten to {options.out}")


def run_startup(options: StartupBenchOptions) -> None:
    from ..bench.startup import bench_startup

    r = bench_startup(options.repeats)
    verdict = "met" if r["help_s"] <= r["target_s"] else "NOT met"
    print(f"start-up: t2i --help {r['help_s']:.2f} s vs python -c pass {r['python_s']:.2f} s (median of {r['repeats']} "
          f"runs each, alternated): ratio {r['ratio']:.1f}; target t2i --help <= {r['target_s']:g} s: {verdict}")  # fmt: skip
