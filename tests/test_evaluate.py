"""`t2i evaluate` end to end through the real CLI, from micro checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from t2i_lightning.eval.reference import ReferenceSet
from t2i_lightning.eval.variants import variant

from .cli_runs import MICRO, ROOT, T2I, run, scalars


def evaluate_args(decoder: dict, judge_runs, score: dict, out, *extra: str) -> list[str]:
    return [
        T2I, "evaluate", "--config", "stages/evaluate.yaml",
        "--data", str(decoder["data"]), "--embeddings", str(decoder["emb"]), "--n", "8", "--seeds", "0", "1",
        "--subset-sizes", "4", "8",
        "--variants", "real", "full", "decoder_only", "image_guided_1", "no_translator", "full_256", "score_unguided",
        "score_guided_2",
        "--score", str(score["score"]), "--captioner", str(score["captioner"]),
        "--clip", str(decoder["clip"]), "--clip-model", MICRO, "--translator", str(decoder["translator"]),
        "--decoder", str(decoder["decoder"]), "--upsampler", str(out / "no-upsampler.ckpt"),
        "--judge", str(judge_runs / "judge" / "checkpoints" / "last.ckpt"),
        "--steps", "3", "--batch-size", "4", "--precision", "32-true", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluation(decoder, judge_run, score_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "eval"
    env = {"TORCH_HOME": str(out.parent / "torch-home")}  # no cached Inception weights
    first = run(*evaluate_args(decoder, judge_run, score_runs, out), env=env)
    again = run(*evaluate_args(decoder, judge_run, score_runs, out), env=env)
    table = json.loads((out / "table.json").read_text())  # kept: a later test re-runs one variant into `out`
    return {"out": out, "first": first, "again": again, "table": table, "decoder": decoder, "judge": judge_run,
            "score": score_runs, "env": env}  # fmt: skip


def test_evaluate_writes_the_table_with_every_row_and_labelled_gaps(evaluation):
    out = evaluation["out"]
    table = json.loads((out / "table.json").read_text())
    rows = {row["variant"]: row for row in table["rows"]}
    assert list(rows) == [
        "real", "full", "decoder_only", "image_guided_1", "no_translator", "full_256", "score_unguided", "score_guided_2"
    ]  # fmt: skip
    assert "make train-upsampler" in rows["full_256"]["skipped"]
    assert "psnr" in rows["decoder_only"]["metrics"] and "psnr" not in rows["full"]["metrics"]
    # image guidance pulls each sample towards its reference image: closer to it than without
    psnr = {name: rows[name]["metrics"]["psnr"]["mean"] for name in ("decoder_only", "image_guided_1")}
    assert psnr["image_guided_1"] > psnr["decoder_only"] + 1.0, psnr
    assert rows["full"]["seeds"] == 2 and rows["real"]["seeds"] == 1
    assert set(rows["full"]["judge_fd_at_n"]) == {"4", "8"}
    # the real-vs-real floor is below a micro generator that draws little more than noise
    assert rows["real"]["metrics"]["judge_fd"]["mean"] < rows["full"]["metrics"]["judge_fd"]["mean"]
    assert 0 <= rows["real"]["metrics"]["align_all"]["mean"] <= 1
    markdown = (out / "table.md").read_text()
    assert "no Inception weights" in markdown and "skipped:" in markdown and "accuracy on these reference images" in markdown
    header_row = next(line for line in markdown.splitlines() if line.startswith("| variant |"))
    assert all(f"| {name} |" in header_row for name in ("judge FD", "judge P", "aligned", "kind", "FID", "KID", "PSNR"))
    split = [key for key in rows["full"]["metrics"] if key.startswith("align_kind_") and key.endswith("obj")]
    assert split and "Exact alignment and kind by the number of objects the caption states." in markdown
    assert (out / "grids" / "full.png").is_file() and not (out / "grids" / "full_256.png").exists()
    logged = scalars(out)
    assert logged["judge_fd/full"][-1] == pytest.approx(rows["full"]["metrics"]["judge_fd"]["mean"], rel=1e-5)


def test_evaluate_reuses_finished_variants_unless_forced(evaluation):
    assert "cached" not in evaluation["first"].stdout
    assert evaluation["again"].stdout.count(": cached") == 13  # 6 drawn rows x 2 seeds + the real row
    assert "reference features (8 images): judge cached, clip cached" in evaluation["again"].stdout
    forced = run(*evaluate_args(evaluation["decoder"], evaluation["judge"], evaluation["score"], evaluation["out"], "--variants", "full",
                                "--seeds", "0", "--force"), env=evaluation["env"])  # fmt: skip
    assert ": cached" not in forced.stdout  # the variant is redrawn (the reference features are not the variant's)
    assert "U-Nets (decoder, upsampler) in 32-true" in (evaluation["out"] / "table.md").read_text()
    # the U-Net's precision is part of what a cached variant was drawn with
    bf16 = run(*evaluate_args(evaluation["decoder"], evaluation["judge"], evaluation["score"], evaluation["out"], "--variants", "full",
                              "--seeds", "0", "--precision", "bf16-mixed"), env=evaluation["env"])  # fmt: skip
    assert ": cached" not in bf16.stdout and "U-Nets (decoder, upsampler) in bf16-mixed" in (evaluation["out"] / "table.md").read_text()


def test_a_bf16_row_with_the_upsampler_is_not_served_from_a_cache_drawn_before_the_upsampler_took_the_precision():
    """Before the upsampler sampled at --precision, a bf16 `full_256` cache held a float32 upsampler's images
    under the fingerprint of the row's options; float32 rows and rows without the upsampler keep theirs."""
    from t2i_lightning.eval.evaluate import EvaluationSettings, _fingerprint
    from t2i_lightning.eval.variants import EvalModels, SamplingOptions

    models = EvalModels(paths={})

    def fingerprint(name: str, precision: str) -> str:
        options = SamplingOptions(precision=precision)
        settings = EvaluationSettings(n=8, seeds=[0], variants=[name], subset_sizes=[8], options=options)
        return _fingerprint(variant(name), settings, models, 0)

    def before_the_change(name: str, precision: str) -> str:  # the record as it was written then
        import hashlib
        from dataclasses import asdict

        options = asdict(SamplingOptions(precision=precision))
        if precision == "32-true":
            del options["precision"]
        paths = {k: None for k in variant(name).needs}
        record = {"variant": name, "n": 8, "seed": 0, "options": options, "paths": paths, "stamps": {}}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]

    assert fingerprint("full_256", "bf16-mixed") != before_the_change("full_256", "bf16-mixed")
    assert fingerprint("full_256", "32-true") == before_the_change("full_256", "32-true")
    assert fingerprint("full", "bf16-mixed") == before_the_change("full", "bf16-mixed")


def _without_timings(table: dict, out) -> list[dict]:
    """The table's rows without what depends on the run (seconds per image, the output directory)."""
    rows = []
    for row in table["rows"]:
        row = {k: v.replace(str(out), "<out>") if isinstance(v, str) else v for k, v in row.items() if k != "grid"}
        if "metrics" in row:
            row["metrics"] = {k: v for k, v in row["metrics"].items() if k != "s_per_image"}
        rows.append(row)
    return rows


def test_evaluate_killed_midway_and_run_again_gives_the_uninterrupted_table(evaluation, tmp_path):
    """SIGKILL once the first drawn variant is cached: no table is left looking complete, and the same
    command again finishes with the metrics of an uninterrupted run."""
    out = tmp_path / "eval"
    args = evaluate_args(evaluation["decoder"], evaluation["judge"], evaluation["score"], out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **evaluation["env"]}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and not list((out / "cache").glob("*.pt")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "evaluate ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "table.json").exists() and not (out / "table.md").exists()
    run(*args, env=evaluation["env"])
    killed_then_rerun = json.loads((out / "table.json").read_text())
    assert _without_timings(killed_then_rerun, out) == _without_timings(evaluation["table"], evaluation["out"])


def test_evaluate_rejects_bad_configs_clearly(evaluation, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("n: 8\nbogus_key: 1\n")
    result = run(T2I, "evaluate", "--config", str(config), check=False)
    assert result.returncode != 0 and "Unknown key(s) bogus_key" in result.stderr and "Traceback" not in result.stderr
    result = run(*evaluate_args(evaluation["decoder"], evaluation["judge"], evaluation["score"], tmp_path,
                                 "--variants", "cfg_x"), check=False)
    assert result.returncode != 0 and "Unknown variant 'cfg_x'" in result.stderr


def test_sample_quality_callback_logs_the_judge_distance_during_a_score_fit(shapes_dir, judge_run, tmp_path):
    runs = tmp_path / "runs"
    run(
        T2I, "fit", "--config", "stages/score.yaml", "--config", "stages/tiny/score.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",  # two validations, each scored
        # the stage's own logging interval and EMA here, not the tiny overlay's shorter ones
        "--trainer.log_every_n_steps", "10",
        "--model.init_args.ema_decay", "0.995", "--model.init_args.ema_start_step", "200",
        "--trainer.callbacks+=t2i_lightning.callbacks.sample_quality.SampleQuality",
        "--trainer.callbacks.judge", str(judge_run / "judge" / "checkpoints" / "last.ckpt"),
        "--trainer.callbacks.n", "8",
        "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.monitor", "val/judge_fd",
        "--trainer.callbacks.mode", "min", "--trainer.callbacks.filename", "best-judge-fd",
        "--data.init_args.train", str(shapes_dir), "--data.init_args.val", str(shapes_dir),
    )  # fmt: skip
    logged = scalars(runs / "score")
    assert len(logged["val/judge_fd"]) == 2 and all(v > 0 for v in logged["val/judge_fd"])
    assert "val/judge_aligned" not in logged  # the score model is unconditional
    assert (runs / "score" / "checkpoints" / "best-judge-fd.ckpt").is_file()  # selected by the sample metric


def test_sample_quality_refuses_a_missing_judge(micro_clip, tmp_path):
    from t2i_lightning.callbacks.sample_quality import SampleQuality

    with pytest.raises(FileNotFoundError, match="make judge"):
        SampleQuality(judge=str(tmp_path / "none.ckpt")).setup(None, None, "fit")
    with pytest.raises(ValueError, match="is not a checkpoint of the judge stage"):
        SampleQuality(judge=str(micro_clip)).setup(None, None, "fit")


def test_the_real_row_is_scored_against_its_own_captions_and_drawn_rows_against_the_reference():
    def captioned(*captions: str) -> ReferenceSet:
        n = len(captions)
        return ReferenceSet(torch.zeros(n, 3, 8, 8), list(captions), [{}] * n, [f"k{i}" for i in range(n)])

    ref, real = captioned("a red circle", "a blue square"), captioned("two green stars", "a cyan ring")
    assert variant("real").captions(ref, real) == real.captions
    for name in ("full", "decoder_only", "image_guided_0.5", "cfg_6", "score_guided_3"):
        assert variant(name).captions(ref, real) == ref.captions
