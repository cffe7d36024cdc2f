"""``t2i bench gpu`` / ``make bench-gpu``: the bench's accelerator rows, for a machine with a GPU.

- **Decoder training at bf16**, for the demo config and the study's (``stages/paper/decoder.yaml``), each
  at its own batch size and at larger ones: images/s of the bare training loop
  (:func:`t2i_lightning.bench.training.bare_loop_seconds`) under bfloat16 autocast and in float32, and
  the model-FLOPs utilisation (MFU; Chowdhery et al. 2022, "PaLM", appendix B): the FLOPs of one
  training step (forward and backward, counted by torch's ``FlopCounterMode`` on the real step:
  matrix products, convolutions, attention) times steps per second, over the device's bf16 matrix
  rate, *measured in the same run* with a large bf16 matrix product (the datasheet's peak is higher;
  the JSON keeps both). "float32" is torch's default there: true float32 matrix products, TF32
  convolutions on NVIDIA GPUs. Beside them, the study's ~11.6 images/s (500k steps at batch 16 in 8 days on
  one V100).
- **Lightning vs the bare loop** on the same device at bf16 (target ≤ 1.05x, as on the CPU).
- **Sampling**: DDPM over all T steps vs DDIM-50, and classifier-free guidance in one batched forward
  vs two (targets ≥ 15x and ≥ 1.5x).
- **Extraction** vs a bare ``encode_image``/``encode_text`` loop (target ≤ 1.15x), for the demo's CLIP
  and for ``ViT-B-32`` (random weights: the time does not depend on them).

Every row runs in one process, each baseline beside what it is compared with. A row that fails is
reported with its error and the others still run.
"""

from __future__ import annotations

import copy
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..registry import DEMO_CLIP
from ..stages.diffusion import DiffusionStage
from .clock import synchronize
from .extraction import bench_extraction
from .report import guarded, machine, table_row
from .sampling import bench_sampling, decoder_for_bench
from .stage_config import trainer_setting
from .training import bare_loop_seconds, config_batch_size, lightning_seconds, random_batches

# The study's decoder: 500,000 steps at batch 16 in 8 days on one V100.
STUDY_V100_IMG_PER_S = 500_000 * 16 / (8 * 24 * 3600)
# Dense bf16 matrix rate from the vendor's datasheets, TFLOP/s, for the record beside the measured one.
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}

SIZES = {
    "full": {"steps": 15, "warmup": 3, "sample_n": 16, "ddim": 50, "ddpm": "all", "extract_shards": 4,
             "workers": 8, "matmul": 8192},
    "quick": {"steps": 4, "warmup": 1, "sample_n": 2, "ddim": 5, "ddpm": "20", "extract_shards": 1,
              "workers": 0, "matmul": 256},
}  # fmt: skip


def matmul_tflops(device: torch.device | str, n: int = 8192, repeats: int = 10) -> float:
    """The device's bf16 matrix rate, TFLOP/s: the median of ``repeats`` timed n×n×n products of random
    bf16 matrices (2n³ FLOPs each) after three untimed ones. The ceiling MFU is read against."""
    device = torch.device(device)
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(repeats + 3):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def training_step_flops(stage: DiffusionStage, batch: dict, device: torch.device | str) -> int:
    """FLOPs of one training step of ``stage`` on ``batch`` (the loss's forward and backward), as torch's
    ``FlopCounterMode`` counts them on ``device``. The optimizer's element-wise work is not counted
    (MFU counts the model's FLOPs only)."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    stage = stage.to(device).train()
    batch = move_data_to_device(batch, torch.device(device))
    with FlopCounterMode(display=False) as counter:
        loss = stage._losses(batch, stage.conditioning.drop_prob)["loss"].mean()
        loss.backward()
    stage.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench_decoder_step(
    config: str, batch_size: int, steps: int, warmup: int, device: torch.device | str, peak_tflops: float
) -> dict:
    """Images/s of ``config``'s decoder training step at ``batch_size`` on ``device``, bf16 autocast and
    float32 (bare loop, fresh copies of the same random weights), with FLOPs per image and bf16 MFU."""
    stage = decoder_for_bench(None, config)
    clip = trainer_setting(config, "gradient_clip_val")
    batches = random_batches(stage, steps, batch_size)
    flops = training_step_flops(copy.deepcopy(stage), batches[0], device)
    bf16 = bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip, bf16=True, device=device)
    float32 = bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip, bf16=False, device=device)
    timed = steps - warmup
    achieved = flops * timed / bf16 / 1e12
    return {
        "config": config,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in stage.net.parameters()),
        "gflops_per_image": flops / batch_size / 1e9,
        "bf16_img_per_s": timed * batch_size / bf16,
        "float32_img_per_s": timed * batch_size / float32,
        "bf16_speedup": float32 / bf16,
        "bf16_tflops": achieved,
        "mfu": achieved / peak_tflops,
        "vs_study_v100": timed * batch_size / bf16 / STUDY_V100_IMG_PER_S,
    }


def bench_lightning_overhead(config: str, batch_size: int, steps: int, warmup: int, device: torch.device | str) -> dict:
    """Decoder training through ``Trainer.fit`` at ``bf16-mixed`` vs the bare bf16 loop, same device and
    batches; the bare loop runs before and after and its faster run counts."""
    stage = decoder_for_bench(None, config)
    clip = trainer_setting(config, "gradient_clip_val")
    batches = random_batches(stage, steps, batch_size)
    bare = bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip, bf16=True, device=device)
    lightning = lightning_seconds(copy.deepcopy(stage), batches, warmup, clip, device=device, precision="bf16-mixed")
    bare = min(bare, bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip, bf16=True, device=device))
    images = (steps - warmup) * batch_size
    return {"config": config, "batch_size": batch_size, "lightning_img_per_s": images / lightning,
            "bare_img_per_s": images / bare, "ratio": lightning / bare}  # fmt: skip


def run_gpu_benchmarks(
    *, device: str = "cuda", configs: tuple[str, ...] = ("stages/decoder.yaml", "stages/paper/decoder.yaml"),
    batch_sizes: dict[str, list[int]] | None = None, data: str | None = "data/shapes",
    clip_models: tuple[str, ...] = (DEMO_CLIP, "ViT-B-32"), quick: bool = False,
) -> dict:  # fmt: skip
    """Every accelerator row (module docstring). ``batch_sizes``: per config, the batch sizes to time
    (default: the config's own and 8 times it); ``data``: image shards for extraction (None: no row)."""
    size = SIZES["quick" if quick else "full"]
    device = torch.device(device)
    results: dict = {"machine": machine(), "device": str(device), "quick": quick, "decoder": {}, "extraction": {}}
    if device.type == "cuda":
        results["machine"]["cuda"] = torch.cuda.get_device_name(device)
    name = results["machine"]["cuda"] or ""
    results["datasheet_bf16_tflops"] = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    results["matmul_bf16_tflops"] = matmul_tflops(device, size["matmul"])
    print(f"[bench gpu] bf16 matrix product: {results['matmul_bf16_tflops']:.0f} TFLOP/s", flush=True)
    for config in configs:
        own = config_batch_size(config)
        for batch_size in (batch_sizes or {}).get(config) or [own, 8 * own]:
            guarded(results["decoder"], f"{config}@{batch_size}", lambda c=config, b=batch_size: bench_decoder_step(
                c, b, size["steps"], size["warmup"], device, results["matmul_bf16_tflops"]))  # fmt: skip
    first = ((batch_sizes or {}).get(configs[0]) or [config_batch_size(configs[0])])[0]
    guarded(results, "lightning", lambda: bench_lightning_overhead(configs[0], first, size["steps"], size["warmup"], device))
    guarded(results, "sampling", lambda: bench_sampling(None, size["sample_n"], size["ddim"], size["ddpm"],
                                                         config=configs[0], device=device))  # fmt: skip
    if data:
        for model in clip_models:
            guarded(results["extraction"], model, lambda m=model: bench_extraction(
                data, m, None, size["extract_shards"], 256, size["workers"], device=device))  # fmt: skip
    return results


def _decoder_rows(r: dict) -> list[tuple]:
    return [(f"decoder training step, {r['config']} ({r['parameters'] / 1e6:.1f}M params), batch {r['batch_size']}",
             f"bf16 {r['bf16_img_per_s']:.0f} img/s ({r['bf16_speedup']:.2f}x float32's {r['float32_img_per_s']:.0f}); "
             f"{r['gflops_per_image']:.1f} GFLOP/img, {r['bf16_tflops']:.1f} TFLOP/s, MFU {100 * r['mfu']:.1f}%",
             r["vs_study_v100"], "- (ratio: vs the study's V100)", None)]  # fmt: skip


def _lightning_rows(r: dict) -> list[tuple]:
    return [(f"decoder training: Lightning vs bare loop, bf16 (batch {r['batch_size']})",
             f"{r['lightning_img_per_s']:.0f} vs {r['bare_img_per_s']:.0f} img/s", r["ratio"], "<= 1.05x",
             r["ratio"] <= 1.05)]  # fmt: skip


def _sampling_rows(s: dict) -> list[tuple]:
    return [(f"sampling: DDPM-{s['ddpm_steps']} vs DDIM-{s['ddim_steps']} (time, {s['n']} images)",
             f"{s['ddpm_s_per_image']:.3f} vs {s['ddim_s_per_image']:.4f} s/image", s["ratio"], ">= 15x", s["ratio"] >= 15),
            ("guidance: two forwards vs one batched (time)",
             f"{s['cfg_two_forwards_s_per_image']:.4f} vs {s['ddim_s_per_image']:.4f} s/image",
             s["cfg_batched_speedup"], ">= 1.5x", s["cfg_batched_speedup"] >= 1.5),
            (f"sampling: DDIM-{s['ddim_steps']} with the U-Net in bf16 autocast vs float32 (speed-up)",
             f"{s['ddim_bf16_s_per_image']:.4f} vs {s['ddim_s_per_image']:.4f} s/image", s["bf16_speedup"], "-", None)]  # fmt: skip


def _extraction_rows(e: dict) -> list[tuple]:
    return [(f"extraction ({e['model']}): Lightning predict + writing vs bare encode loop (time)",
             f"{e['extraction_img_per_s']:.0f} vs {e['bare_img_per_s']:.0f} img/s ({e['images']} images, "
             f"{e['num_workers']} workers)", e["ratio"], "<= 1.15x", e["ratio"] <= 1.15)]  # fmt: skip


def gpu_table(results: dict) -> str:
    """The accelerator rows as a Markdown table; a row whose run failed shows its error."""
    rows = ["| benchmark | measured | ratio | target | met |", "|---|---|---|---|---|"]
    sections = [(f"decoder step {key}", r, _decoder_rows) for key, r in results["decoder"].items()]
    sections += [("Lightning vs bare loop", results.get("lightning"), _lightning_rows),
                 ("sampling", results.get("sampling"), _sampling_rows)]  # fmt: skip
    sections += [(f"extraction {model}", e, _extraction_rows) for model, e in results["extraction"].items()]
    for name, result, render in sections:
        if not result or "error" in result:
            rows.append(table_row(name, f"failed: {(result or {}).get('error', 'not run')}", None, "", None))
        else:
            rows.extend(table_row(*cells) for cells in render(result))
    m = results["machine"]
    peak = results["datasheet_bf16_tflops"]
    header = (f"{m['cuda'] or results['device']}: bf16 matrix product {results['matmul_bf16_tflops']:.0f} TFLOP/s "
              f"measured (MFU is read against it{f'; datasheet {peak:.0f}' if peak else ''}); {m['cpu_count']} CPUs, "
              f"torch {m['torch']}{'; QUICK mode: smoke-test sizes' if results['quick'] else ''}")  # fmt: skip
    return header + "\n\n" + "\n".join(rows)
