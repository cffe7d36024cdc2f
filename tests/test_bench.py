"""`t2i bench`: every benchmark runs through the real CLI at smoke-test sizes and reports ratios; the
stage log records what each `t2i` command cost. Speed itself is never asserted here."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml

from t2i_lightning.bench.stage_config import stage_config_section, trainer_setting
from t2i_lightning.bench.stage_log import demo_summary, stage_name

from .cli_runs import MICRO, ROOT, T2I, run
from .test_decoder import MICRO_UNET


def test_every_t2i_command_appends_its_time_memory_and_exit_status(tmp_path, shapes_dir):
    log = tmp_path / "stages.jsonl"
    env = {"T2I_TIMINGS": str(log)}
    run(T2I, "data", "inspect", str(shapes_dir), "--out", str(tmp_path / "inspect.png"), "--n", "4", env=env)
    failed = run(T2I, "embed-text", "a red circle", "--translator", str(tmp_path / "none.ckpt"), env=env, check=False)
    assert failed.returncode != 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["stage"] for r in records] == ["data", "embed-text"]
    assert records[0]["exit_status"] == 0 and records[1]["exit_status"] != 0
    assert all(r["wall_s"] > 0 and r["peak_rss_bytes"] > 50 * 2**20 for r in records)  # torch alone is more
    summary = demo_summary(log)
    assert list(summary["stages"]) == ["data"]  # failed commands do not count
    assert summary["total_wall_s"] == records[0]["wall_s"]
    assert demo_summary(log, ("data", "decoder"))["missing"] == ["decoder"]
    assert stage_name(["fit", "--config", "stages/decoder.yaml", "--trainer.max_steps", "3"]) == "decoder"


def test_quick_bench_runs_every_benchmark_and_writes_the_table_and_json(decoder, tmp_path):
    config = yaml.safe_load((ROOT / "stages" / "decoder.yaml").read_text())
    config["model"]["init_args"]["net"]["init_args"] = {**MICRO_UNET, "learn_variance": True}
    data = str(decoder["data"])
    config["data"]["init_args"].update(embeddings=str(decoder["emb"]), train=data, val=data, image_size=32,
                                       batch_size=8, num_workers=0)  # fmt: skip
    tiny = tmp_path / "decoder.yaml"
    tiny.write_text(yaml.safe_dump(config))
    log = tmp_path / "stages.jsonl"
    log.write_text(json.dumps({"stage": "clip", "command": "fit --config stages/clip.yaml", "exit_status": 0,
                               "wall_s": 60.0, "peak_rss_bytes": 2**30, "peak_rss_children_bytes": 0}) + "\n")  # fmt: skip
    out = tmp_path / "bench" / "bench.json"
    result = run(
        T2I, "bench", "--quick", "--config", str(tiny), "--data", data, "--decoder", str(decoder["decoder"]),
        "--embeddings", str(decoder["emb"]), "--clip-model", MICRO, "--clip", str(decoder["clip"]),
        "--stage-log", str(log), "--precision-configs", "stages/captioner.yaml", str(tmp_path / "missing.yaml"), "--out", str(out),
    )  # fmt: skip
    results = json.loads(out.read_text())
    ratios = [results["training"]["ratio"], results["training"]["bf16_speedup"], results["input"]["ratio_to_training"], results["sampling"]["ratio"],
              results["sampling"]["cfg_batched_speedup"], results["extraction"]["ratio"],
              results["stage_precision"]["stages/captioner.yaml"]["bf16_speedup"], results["sampling"]["bf16_speedup"],
              results["sampling"]["ddim_bf16_colour_error_ratio"], results["startup"]["ratio"]]  # fmt: skip
    assert all(math.isfinite(r) and r > 0 for r in ratios), ratios
    assert results["input"]["embeddings_joined"] and results["sampling"]["quality_measured"]
    assert results["sampling"]["ddpm_steps"] == 100 and results["sampling"]["ddim_steps"] == 10
    assert results["demo"]["total_wall_s"] == 60.0
    captioner = results["stage_precision"]["stages/captioner.yaml"]
    assert (captioner["stage"], captioner["batch_size"], captioner["steps_timed"]) == ("CaptionerStage", 4, 2)
    missing = results["stage_precision"][str(tmp_path / "missing.yaml")]  # failed alone, the other rows ran
    assert missing["error"].startswith("ValueError:") and "missing.yaml does not parse" in missing["error"]
    assert f"| {tmp_path / 'missing.yaml'} training step through Lightning: bf16-mixed vs float32 (speed-up) | failed: ValueError" in result.stdout
    for row in ("Lightning vs bare loop", "input pipeline", "DDPM-100 vs DDIM-10", "two forwards vs one batched",
                "extraction", "CaptionerStage training step through Lightning", "colour-error ratio", "DDIM bf16 U-Net vs float32",
                "U-Net in bf16 autocast", "`t2i --help` vs `python -c pass`", "demo stage clip", "whole demo"):  # fmt: skip
        assert row in result.stdout, row
    assert "QUICK mode" in result.stdout


def test_startup_bench_times_t2i_help_against_a_bare_interpreter_side_by_side(tmp_path):
    """`t2i bench startup`: `t2i --help` and `python -c pass` in fresh processes, alternated; neither
    appends to the stage log of the `t2i` that runs them."""
    log = tmp_path / "stages.jsonl"
    result = run(T2I, "bench", "startup", "--repeats", "2", env={"T2I_TIMINGS": str(log)})
    found = re.search(r"t2i --help ([\d.]+) s vs python -c pass ([\d.]+) s \(median of 2 runs each, alternated\): "
                      r"ratio ([\d.]+); target t2i --help <= 1.5 s: (met|NOT met)", result.stdout)  # fmt: skip
    assert found, result.stdout
    help_s, python_s, ratio = (float(found[i]) for i in (1, 2, 3))
    assert 0 < python_s and 0 < help_s and ratio > 0
    assert [json.loads(line)["stage"] for line in log.read_text().splitlines()] == ["bench"]  # the outer command only
    refused = run(T2I, "bench", "startup", "--repeats", "0", check=False)
    assert refused.returncode != 0 and "--repeats must be positive" in refused.stderr


def test_bench_settings_come_from_the_stage_config_then_the_shared_trainer_defaults(tmp_path):
    decoder = ROOT / "stages" / "decoder.yaml"
    shared = yaml.safe_load((ROOT / "stages" / "_trainer.yaml").read_text())["trainer"]
    own = yaml.safe_load(decoder.read_text())
    assert trainer_setting(decoder, "gradient_clip_val") == shared["gradient_clip_val"]
    assert trainer_setting(decoder, "max_steps") == own["trainer"]["max_steps"]  # the stage's own value wins
    assert stage_config_section(decoder, "data", "init_args", "batch_size") == own["data"]["init_args"]["batch_size"]
    lone = tmp_path / "lone.yaml"  # no _trainer.yaml beside it: the Trainer's default, as a real run gets
    lone.write_text("trainer: {max_steps: 3}\n")
    assert trainer_setting(lone, "gradient_clip_val") is None
    with pytest.raises(KeyError, match="lone.yaml has no data"):
        stage_config_section(lone, "data", "init_args", "batch_size")


def test_step_flops_are_counted_on_the_real_step_and_scale_with_the_batch():
    """MFU's numerator: the loss's forward and backward FLOPs, exactly linear in the batch (every op of
    the U-Net is per-sample), and about three forwards (the backward costs about twice the forward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from t2i_lightning.bench.gpu import training_step_flops
    from t2i_lightning.bench.training import random_batches
    from t2i_lightning.nn.unet import ConditionalUNet
    from t2i_lightning.stages.conditioning import ImageEmbedding
    from t2i_lightning.stages.diffusion import DiffusionStage

    stage = DiffusionStage(ConditionalUNet(**MICRO_UNET, learn_variance=True), ImageEmbedding())
    stage.conditioning.stats_loaded = True
    two, four = (training_step_flops(stage, random_batches(stage, 1, n)[0], "cpu") for n in (2, 4))
    assert two > 0 and four == 2 * two
    assert all(p.grad is None for p in stage.parameters())  # the count leaves no gradients behind
    batch = random_batches(stage, 1, 2)[0]
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        stage._losses(batch, 0.0)
    assert 2.5 < two / forward.get_total_flops() < 3.05


def test_gpu_bench_refuses_without_a_gpu_and_runs_its_rows_on_the_cpu(decoder, tmp_path):
    import torch

    if not torch.cuda.is_available():
        refused = run(T2I, "bench", "gpu", "--out", str(tmp_path / "gpu.json"), check=False)
        assert refused.returncode != 0 and "no CUDA device" in refused.stderr and "--device cpu" in refused.stderr
        assert not (tmp_path / "gpu.json").exists()
    config = yaml.safe_load((ROOT / "stages" / "decoder.yaml").read_text())
    config["model"]["init_args"]["net"]["init_args"] = {**MICRO_UNET, "learn_variance": True}
    tiny = tmp_path / "decoder.yaml"
    tiny.write_text(yaml.safe_dump(config))
    out = tmp_path / "bench" / "gpu.json"
    result = run(T2I, "bench", "gpu", "--device", "cpu", "--quick", "--configs", str(tiny), "--batch-sizes", "2", "4",
                 "--data", str(decoder["data"]), "--clip-models", MICRO, "--out", str(out))  # fmt: skip
    results = json.loads(out.read_text())
    rows = results["decoder"]
    assert sorted(rows) == [f"{tiny}@2", f"{tiny}@4"] and not any("error" in r for r in rows.values())
    for r in rows.values():
        assert r["mfu"] == pytest.approx(r["bf16_tflops"] / results["matmul_bf16_tflops"])
        assert r["vs_study_v100"] == pytest.approx(r["bf16_img_per_s"] / (500_000 * 16 / (8 * 24 * 3600)))
    assert rows[f"{tiny}@4"]["gflops_per_image"] == pytest.approx(rows[f"{tiny}@2"]["gflops_per_image"])
    assert results["lightning"]["batch_size"] == 2 and math.isfinite(results["lightning"]["ratio"])
    assert results["sampling"]["device"] == "cpu" and results["extraction"][MICRO]["images"] > 0
    for row in ("MFU", "Lightning vs bare loop", "DDPM-20 vs DDIM-5", "two forwards vs one batched", "extraction"):
        assert row in result.stdout, row


def test_gpu_table_shows_a_failed_row_with_its_error_beside_the_others():
    from t2i_lightning.bench.gpu import gpu_table

    results = {
        "machine": {"cuda": "NVIDIA H200", "cpu_count": 16, "torch": "2.11"}, "device": "cuda", "quick": False,
        "matmul_bf16_tflops": 780.0, "datasheet_bf16_tflops": 989.0,
        "decoder": {"stages/paper/decoder.yaml@128": {"error": "OutOfMemoryError: CUDA out of memory"}},
        "lightning": {"batch_size": 32, "lightning_img_per_s": 900.0, "bare_img_per_s": 1000.0, "ratio": 1.11},
        "sampling": {"error": "RuntimeError: boom"}, "extraction": {},
    }  # fmt: skip
    text = gpu_table(results)
    assert "| decoder step stages/paper/decoder.yaml@128 | failed: OutOfMemoryError: CUDA out of memory |" in text
    assert "| sampling | failed: RuntimeError: boom |" in text
    assert "| decoder training: Lightning vs bare loop, bf16 (batch 32) | 900 vs 1000 img/s | 1.11x | <= 1.05x | NO |" in text
    assert "780 TFLOP/s measured" in text and "datasheet 989" in text
