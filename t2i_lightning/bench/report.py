"""``t2i bench`` / ``make bench``: every benchmark run in one process, one table, ``runs/bench/bench.json``.

Each row is a ratio against a baseline run side by side (or, for the demo, totals against the
targets), with the target it is read against. ``quick`` shrinks every run (steps, images, DDPM
steps) so that the whole bench is a smoke test of a minute or two; its numbers are not the
README's.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from ..registry import DEMO_CLIP
from .extraction import bench_extraction
from .input_pipeline import bench_input
from .latent_step import bench_latent_step
from .sampling import bench_sampling
from .stage_log import demo_summary
from .stage_precision import bench_stage_precision
from .startup import bench_startup
from .training import bench_training

SIZES = {
    "full": {"steps": 30, "warmup": 5, "train_batch": None, "input_batches": 40, "n": 4, "ddim": 50,
             "ddpm": "all", "shards": 2, "precision_steps": 10, "precision_warmup": 3, "precision_batch": None,
             "latent_rounds": 2},
    "quick": {"steps": 8, "warmup": 2, "train_batch": 8, "input_batches": 8, "n": 2, "ddim": 10,
              "ddpm": "100", "shards": 1, "precision_steps": 3, "precision_warmup": 1, "precision_batch": 4,
              "latent_rounds": 1},  # the latent row times the demo's full-size U-Nets: one round keeps --quick near two minutes
}  # fmt: skip
# The stages besides the decoder (its own rows) that `make` trains at *_PRECISION: bf16-mixed vs float32.
PRECISION_CONFIGS = ("stages/clip.yaml", "stages/upsampler.yaml", "stages/score.yaml", "stages/captioner.yaml",
                     "stages/judge.yaml")  # fmt: skip
GIB = 1024**3
# The stages `make demo` runs, as the stage log names them (a stage config's name, else the subcommand).
DEMO_STAGES = ("data", "clip", "embed", "translator", "embed-text", "decoder", "upsampler", "sample", "score",
               "captioner", "judge", "evaluate")  # fmt: skip


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def guarded(results: dict, name: str, run: Callable[[], Any]) -> None:
    """``results[name] = run()``, or its error (the other rows still run), with the seconds it took."""
    start = time.perf_counter()
    try:
        results[name] = run()
    except Exception as error:  # noqa: BLE001 (reported in the table and the JSON)
        results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    results[name]["seconds"] = time.perf_counter() - start
    print(f"[bench] {name}: {results[name]['seconds']:.1f} s", flush=True)


def run_benchmarks(
    *, quick: bool = False, config: str = "stages/decoder.yaml", data: str = "data/shapes",
    decoder: str | None = None, embeddings: str | None = None, clip_model: str = DEMO_CLIP,
    clip: str | None = None, stage_log: str | None = None, precision_configs: tuple[str, ...] = PRECISION_CONFIGS,
) -> dict:  # fmt: skip
    """Run every benchmark; ``decoder``/``clip`` checkpoints are optional (random weights time the same),
    ``embeddings`` (with ``decoder``) adds the samplers' quality, ``stage_log`` the whole-demo row,
    ``precision_configs`` the stages whose training is timed in bf16-mixed against float32 on ``data``;
    the command line's start-up is timed at every size (a few seconds)."""
    size = SIZES["quick" if quick else "full"]
    results: dict = {"machine": machine(), "quick": quick}
    results["training"] = bench_training(config, size["steps"], size["warmup"], size["train_batch"])
    results["latent"] = bench_latent_step(size["steps"], size["warmup"], size["train_batch"], rounds=size["latent_rounds"])
    results["input"] = bench_input(config, data, size["input_batches"])
    results["input"]["ratio_to_training"] = (
        results["input"]["samples_per_s"] / results["training"]["lightning_img_per_s"]
    )
    references = (data, embeddings) if decoder and embeddings else None
    results["sampling"] = bench_sampling(decoder, size["n"], size["ddim"], size["ddpm"], config=config,
                                         references=references)  # fmt: skip
    results["extraction"] = bench_extraction(data, clip_model, clip, size["shards"])
    results["extraction"]["weights"] = clip or "random"
    results["stage_precision"] = {}
    for config in precision_configs:  # a stage the data cannot feed (the judge needs shapes metadata) fails alone
        guarded(results["stage_precision"], config, lambda c=config: bench_stage_precision(
            c, data, size["precision_steps"], size["precision_warmup"], size["precision_batch"]))  # fmt: skip
    results["startup"] = bench_startup()
    results["demo"] = demo_summary(stage_log, DEMO_STAGES) if stage_log else None
    return results


def table_row(name: str, value: str, ratio: float | None, target: str, met: bool | None) -> str:
    """One Markdown row: what, measured values, the ratio (if any), the target, and whether it is met."""
    ratio_text = "" if ratio is None else f"{ratio:.2f}x"
    verdict = {True: "yes", False: "NO", None: "-"}[met]
    return f"| {name} | {value} | {ratio_text} | {target} | {verdict} |"


def table(results: dict) -> str:
    """The results as a Markdown table: what, measured values, ratio, target, met."""
    t, i, s, e, u = (results[k] for k in ("training", "input", "sampling", "extraction", "startup"))
    rows = [
        "| benchmark | measured | ratio | target | met |",
        "|---|---|---|---|---|",
        table_row("decoder training: Lightning vs bare loop (time)",
             f"{t['lightning_img_per_s']:.1f} vs {t['bare_img_per_s']:.1f} img/s (batch {t['batch_size']})",
             t["ratio"], "<= 1.05x", t["ratio"] <= 1.05),
        table_row("decoder training step: bf16 autocast vs float32, bare loop (speed-up)",
             f"{t['bf16_img_per_s']:.1f} vs {t['bare_img_per_s']:.1f} img/s", t["bf16_speedup"], "-", None),
        table_row(f"decoder training step: latent ({'x'.join(map(str, results['latent']['latent_shape']))}) vs pixel (64px) "
                  "at equal batch, bare loop (speed-up)",
             f"{results['latent']['latent_img_per_s']:.1f} vs {results['latent']['pixel_img_per_s']:.1f} img/s float32, "
             f"{results['latent']['latent_bf16_img_per_s']:.1f} vs {results['latent']['pixel_bf16_img_per_s']:.1f} bf16 "
             f"(batch {results['latent']['batch_size']})", results["latent"]["speedup"], ">= 3x", results["latent"]["speedup"] >= 3),
        table_row("input pipeline vs training consumption",
             f"{i['samples_per_s']:.0f} samples/s ({i['datamodule']}, {i['num_workers']} worker(s))",
             i["ratio_to_training"], ">= 5x", i["ratio_to_training"] >= 5),
        table_row(f"sampling: DDPM-{s['ddpm_steps']} vs DDIM-{s['ddim_steps']} (time)",
             f"{s['ddpm_s_per_image']:.2f} vs {s['ddim_s_per_image']:.2f} s/image ({s['image_size']}px)",
             s["ratio"], ">= 15x", s["ratio"] >= 15),
        table_row("guidance: two forwards vs one batched (time)",
             f"{s['cfg_two_forwards_s_per_image']:.2f} vs {s['ddim_s_per_image']:.2f} s/image",
             s["cfg_batched_speedup"], ">= 1.5x", s["cfg_batched_speedup"] >= 1.5),
        table_row(f"sampling: DDIM-{s['ddim_steps']} with the U-Net in bf16 autocast vs float32 (speed-up)",
                  f"{s['ddim_bf16_s_per_image']:.2f} vs {s['ddim_s_per_image']:.2f} s/image", s["bf16_speedup"], "-", None),
        table_row("extraction: Lightning predict + writing vs bare encode loop (time)",
             f"{e['extraction_img_per_s']:.0f} vs {e['bare_img_per_s']:.0f} img/s ({e['images']} images)",
             e["ratio"], "<= 1.15x", e["ratio"] <= 1.15),
        table_row("start-up: `t2i --help` vs `python -c pass`, fresh processes (time)",
             f"{u['help_s']:.2f} vs {u['python_s']:.2f} s (median of {u['repeats']})", u["ratio"],
             f"`t2i --help` <= {u['target_s']:g} s", u["help_s"] <= u["target_s"]),
    ]  # fmt: skip
    for config, p in results["stage_precision"].items():
        name = f"{p.get('stage', config)} training step through Lightning: bf16-mixed vs float32 (speed-up)"
        if "error" in p:
            rows.append(table_row(name, f"failed: {p['error']}", None, "-", None))
            continue
        rows.append(table_row(name, f"{p['bf16_img_per_s']:.1f} vs {p['float32_img_per_s']:.1f} img/s ({config}, batch {p['batch_size']})",
                              p["bf16_speedup"], "-", None))  # fmt: skip
    if s["quality_measured"]:
        ddim, ddpm = s["ddim_colour_error_ratio"], s["ddpm_colour_error_ratio"]
        rows.append(table_row("sampling quality: colour-error ratio DDIM vs DDPM (lower is better)",
                         f"{ddim:.3f} vs {ddpm:.3f} (n={s['n']})", ddim / ddpm, "<= 1.10x", ddim <= 1.1 * ddpm))  # fmt: skip
        bf16 = s["ddim_bf16_colour_error_ratio"]
        rows.append(table_row("sampling quality: colour-error ratio DDIM bf16 U-Net vs float32 (lower is better)",
                              f"{bf16:.3f} vs {ddim:.3f} (n={s['n']})", bf16 / ddim, "<= 1.10x", bf16 <= 1.1 * ddim))  # fmt: skip
    demo = results.get("demo")
    if demo:
        for name, stage in demo["stages"].items():
            rows.append(table_row(f"demo stage {name}", f"{stage['wall_s'] / 60:.1f} min, peak {stage['peak_rss_bytes'] / GIB:.2f} GiB",
                             None, "", None))  # fmt: skip
        minutes, peak = demo["total_wall_s"] / 60, demo["max_peak_rss_bytes"] / GIB
        complete = not demo["missing"]
        scope = "" if complete else f"; not recorded: {', '.join(demo['missing'])}"
        rows.append(table_row(f"whole demo (sum of recorded stage commands{scope})", f"{minutes:.1f} min", None, "<= 30 min",
                         minutes <= 30 if complete else None))  # fmt: skip
        rows.append(table_row("whole demo peak memory (largest process)", f"{peak:.2f} GiB", None, "<= 6 GiB",
                         peak <= 6 if complete else None))  # fmt: skip
    m = results["machine"]
    header = (f"{m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
              f"GPU: {m['cuda'] or 'none'}{'; QUICK mode: smoke-test sizes' if results['quick'] else ''}")  # fmt: skip
    return header + "\n\n" + "\n".join(rows)

