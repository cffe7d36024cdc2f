"""The command line: help texts, shared trainer defaults, and a tiny fit through the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from t2i_lightning.training.lightning_cli import (
    SUBCOMMANDS,
    T2ILightningCLI,
    trainer_defaults_for,
    trainer_defaults_kwargs,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.mark.parametrize(
    "command, expected",
    [
        (["t2i", "--help"], ["fit", "data"]),
        (["lightning", "--help"], ["fit", "validate", "predict"]),
        (["t2i", "data", "shapes", "--help"], ["--train", "--size", "--seed", "--workers"]),
        (["t2i", "data", "coco", "--help"], ["--captions", "--resize"]),
        (["t2i", "data", "inspect", "--help"], ["--out"]),
        (["t2i", "fit", "--help"], ["--trainer.max_steps", "--config"]),
    ],
)
def test_help_texts(command, expected):
    result = run(str(BIN / command[0]), *command[1:])
    for word in expected:
        assert word in result.stdout


def test_lightning_rejects_unknown_command():
    result = run(str(BIN / "lightning"), "train", check=False)
    assert result.returncode != 0 and "fit" in result.stderr


def test_trainer_defaults_are_found_beside_or_above_a_stage_config(tmp_path):
    assert trainer_defaults_for(ROOT / "stages" / "decoder.yaml") == ROOT / "stages" / "_trainer.yaml"
    assert (
        trainer_defaults_for(ROOT / "stages" / "paper" / "decoder.yaml") == ROOT / "stages" / "_trainer.yaml"
    )
    assert trainer_defaults_for(tmp_path / "x.yaml") is None
    argv = ["fit", "--config", str(ROOT / "stages" / "clip.yaml"), "--trainer.max_steps", "3"]
    defaults = {"default_config_files": [str(ROOT / "stages" / "_trainer.yaml")]}
    assert trainer_defaults_kwargs(argv, subcommands=True) == {name: defaults for name in SUBCOMMANDS}
    assert trainer_defaults_kwargs(argv[1:], subcommands=False) == defaults
    explicit = ["fit", "--config", "stages/_trainer.yaml", "--config", "stages/clip.yaml"]
    assert trainer_defaults_kwargs(explicit, subcommands=True) == {}
    assert trainer_defaults_kwargs(["fit", "--config", str(tmp_path / "x.yaml")], subcommands=True) == {}
    # the defaults reach the config, and the stage config and the command line override them
    config = T2ILightningCLI(args=["--config", str(ROOT / "stages" / "clip.yaml"), "--trainer.max_steps", "3"], run=False).config
    shared = yaml.safe_load((ROOT / "stages" / "_trainer.yaml").read_text())["trainer"]
    assert config.trainer.gradient_clip_val == shared["gradient_clip_val"] and config.trainer.max_steps == 3


@pytest.mark.parametrize("command", ["t2i", "lightning"])
def test_tiny_fit_through_the_real_cli_writes_checkpoint_and_events(command, tmp_path, shapes_dir):
    runs = tmp_path / "runs"
    args = [
        "fit",
        "--config", "stages/_trainer.yaml",
        "--config", "tests/configs/tiny_fit.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--data.init_args.train", str(shapes_dir),
        "--data.init_args.val", str(shapes_dir),
    ]  # fmt: skip
    run(str(BIN / command), *args)
    run_dir = runs / "tiny"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert "MeanColourRegressor" in (run_dir / "config.yaml").read_text()
    run(str(BIN / command), *args, "--trainer.max_steps", "2", "--fresh")  # a fresh second run, same directory

    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert any("SkippedSamplesLogger" in key for key in checkpoint["callbacks"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    tags = events.Tags()["scalars"]
    assert "train/loss" in tags and "val/loss" in tags and "data/skipped_train" in tags


def test_fit_with_a_missing_data_path_names_it(tmp_path):
    result = run(
        str(BIN / "t2i"), "fit", "--config", "stages/_trainer.yaml", "--config", "tests/configs/tiny_fit.yaml",
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.init_args.train", str(tmp_path / "missing"),
        "--data.init_args.val", "null", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert str(tmp_path / "missing") in result.stderr and "make data" in result.stderr
    assert not (tmp_path / "tiny" / "checkpoints").exists()


def test_makefile_and_stage_configs_name_the_demo_clip_of_the_python_defaults():
    import re

    import yaml

    from t2i_lightning.registry import DEMO_CLIP, DEMO_EMBEDDINGS

    root = Path(__file__).resolve().parents[1]
    assert re.search(r"^CLIP_MODEL\s*\?=\s*(\S+)", (root / "Makefile").read_text(), re.M).group(1) == DEMO_CLIP
    for name in ("clip", "embed", "decoder_text"):
        config = yaml.safe_load((root / "stages" / f"{name}.yaml").read_text())
        names = re.findall(r"model_name: (\S+)", yaml.safe_dump(config))
        assert names and set(names) == {DEMO_CLIP}, name
    for name in ("translator", "decoder", "evaluate"):
        text = (root / "stages" / f"{name}.yaml").read_text()
        paths = set(re.findall(r"data/shapes/emb-[\w.-]+", text))
        assert paths == {DEMO_EMBEDDINGS}, (name, paths)


def printed_config(*configs: Path) -> dict:
    """The config `t2i fit --config A [--config B ...] --print_config` prints, parsed in this process."""
    import contextlib
    import io

    import yaml

    from t2i_lightning.training.lightning_cli import run_lightning

    argv = ["fit"] + [arg for config in configs for arg in ("--config", str(config))] + ["--print_config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        run_lightning(argv)
    assert not exit_.value.code, f"{argv} did not parse"
    return yaml.safe_load(out.getvalue())


def flattened(tree: dict, prefix: str = "") -> dict[str, object]:
    items = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            items.update(flattened(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def test_quick_overlays_parse_over_their_stage_and_only_shorten_it():
    """Each stages/quick/X.yaml parses over stages/X.yaml through the real CLI parser, changes exactly the
    keys it names (each to a new value), fewer steps or epochs than the stage's own, and nothing else."""
    import yaml

    overlays = sorted((ROOT / "stages" / "quick").glob("*.yaml"))
    made = set(re.findall(r"\$\(call overlay,(\w+)\)", (ROOT / "Makefile").read_text()))
    assert {path.stem for path in overlays} == made  # every stage make trains has one, and no other file
    for overlay in overlays:
        base = flattened(printed_config(ROOT / "stages" / overlay.name))
        merged = flattened(printed_config(ROOT / "stages" / overlay.name, overlay))
        named = flattened(yaml.safe_load(overlay.read_text()))
        assert {key: merged[key] for key in named} == named, overlay.name
        assert all(base[key] != value for key, value in named.items()), overlay.name
        assert {k: v for k, v in merged.items() if k not in named} == {k: v for k, v in base.items() if k not in named}
        if "trainer.max_steps" in named:
            assert 0 < named["trainer.max_steps"] < base["trainer.max_steps"], overlay.name
        else:
            assert 0 < named["trainer.max_epochs"] < base["trainer.max_epochs"], overlay.name


@pytest.mark.parametrize("stage", ["decoder", "upsampler", "translator"])
def test_a_paper_config_is_the_same_alone_and_as_an_overlay_over_the_demo_stage(stage):
    """stages/paper/X.yaml names every key the demo's stages/X.yaml sets, so `STAGE_OVERLAY=stages/paper`
    inherits none of the demo's CPU shortcuts (patch size, layout head, residual upsampler ...)."""
    paper = ROOT / "stages" / "paper" / f"{stage}.yaml"
    alone = flattened(printed_config(paper))
    assert flattened(printed_config(ROOT / "stages" / f"{stage}.yaml", paper)) == alone
    assert "runs/translator/" not in paper.read_text()  # its grids use the paper translator, not the demo's


def test_demo_quick_runs_the_demo_targets_with_the_overlays_in_their_own_data_and_runs():
    from .cli_runs import make_dry_run

    quick = make_dry_run("demo-quick", "QUICK_RUNS=/nonexistent/runs", "QUICK_DATA=/nonexistent/data")
    full = make_dry_run("demo", "RUNS=/nonexistent/runs", "DATA=/nonexistent/data")
    fits = [line for line in quick if " fit --config " in line]
    stages = [re.search(r"fit --config stages/(\w+)\.yaml --config stages/quick/(\w+)\.yaml ", line) for line in fits]
    assert all(match and match[1] == match[2] for match in stages), fits
    assert [match[1] for match in stages] == [
        "clip", "translator", "autoencoder", "decoder_latent", "upsampler", "decoder", "decoder_text_latent", "score",
        "captioner", "judge",
    ]  # fmt: skip
    assert not any("stages/quick" in line for line in full)
    assert len(fits) == sum(" fit --config " in line for line in full)
    assert any("data shapes --out /nonexistent/data --train 5000 --val 500 --test 500" in line for line in quick)
    assert any("T2I_TIMINGS=/nonexistent/runs/bench/stages.jsonl" in line for line in quick)
    evaluate = [line for line in quick if " evaluate --config " in line]
    assert len(evaluate) == 1 and "--n 10 --seeds 0" in evaluate[0] and "--out /nonexistent/runs/eval" in evaluate[0]
    assert not [line for line in quick if re.search(r"(^|[\s=])(data/shapes|runs)/", line)]  # the full demo's


def test_make_refuses_a_data_path_with_spaces_naming_it():
    """make would split it into two targets (and once ran `make data` into the wrong path)."""
    result = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), "embed", "DATA=my photos/coco"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0 and 'DATA="my photos/coco"' in result.stderr and "without spaces" in result.stderr
    assert "t2i" not in result.stdout  # nothing would have run
