"""Shared fixtures: a tiny shapes dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i_lightning.data.shapes.generate import ShapesConfig, generate_shapes

from .cli_runs import T2I, decoder_args, extract, fit_clip, judge_fit_args, run


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """64px shapes shards: 96 train, 40 val, 16 test samples in shards of 16."""
    root = tmp_path_factory.mktemp("shapes")
    config = ShapesConfig(seed=1, size=64, samples_per_shard=16)
    generate_shapes(root, {"train": 96, "val": 40, "test": 16}, config, workers=1, progress=False)
    return root


@pytest.fixture(scope="session", autouse=True)
def repository_root_stays_clean():
    """No test may leave files in the repository's top level (e.g. a LightningCLI config.yaml)."""
    root = Path(__file__).resolve().parents[1]
    before = {p.name for p in root.iterdir()}
    yield
    added = {p.name for p in root.iterdir()} - before - {".pytest_cache"}
    assert not added, f"tests left files in {root}: {sorted(added)}"


@pytest.fixture(scope="session")
def micro_clip(tmp_path_factory, shapes_dir):
    """A micro CLIP fitted through the CLI: its checkpoint, under ``<root>/runs/clip/``."""
    return fit_clip(tmp_path_factory.mktemp("clip_space") / "runs", shapes_dir)


@pytest.fixture(scope="session")
def pipeline(micro_clip, shapes_dir):
    """The micro CLIP, its embeddings extracted, and a translator fitted, all through the CLI."""
    clip_ckpt = micro_clip
    runs = clip_ckpt.parents[2]
    root = runs.parent
    emb = root / "emb"
    extract(clip_ckpt, shapes_dir, emb)
    run(
        T2I, "fit", "--config", "stages/translator.yaml", "--config", "stages/tiny/translator.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), "--model.init_args.stats", str(emb / "stats.json"),
        "--data.init_args.train", str(emb), "--data.init_args.val", str(emb),
    )  # fmt: skip
    return {"runs": runs, "clip": clip_ckpt, "emb": emb, "data": shapes_dir,
            "translator": runs / "translator" / "checkpoints" / "last.ckpt"}  # fmt: skip


@pytest.fixture(scope="session")
def decoder(pipeline, tmp_path_factory):
    """A micro decoder fitted through `lightning fit --config stages/decoder.yaml`."""
    runs = tmp_path_factory.mktemp("decoder_runs")
    run(*decoder_args(pipeline, runs, command=str(Path(T2I).with_name("lightning"))))
    return {**pipeline, "decoder_runs": runs, "decoder": runs / "decoder" / "checkpoints" / "last.ckpt"}


@pytest.fixture(scope="session")
def judge_run(shapes_dir, tmp_path_factory):
    """A micro judge fitted through the CLI for stages/tiny/judge.yaml's 30 steps: its runs directory
    (``<runs>/judge/``)."""
    runs = tmp_path_factory.mktemp("judge") / "runs"
    run(*judge_fit_args(runs, shapes_dir))
    return runs


@pytest.fixture(scope="session")
def score_runs(shapes_dir, tmp_path_factory):
    """A micro score model and a micro captioner fitted through `t2i fit --config stages/{score,captioner}.yaml
    --config stages/tiny/{score,captioner}.yaml` (8 steps each) in bf16-mixed, as `make train-score
    train-captioner` fit them on CPUs with native bf16."""
    runs = tmp_path_factory.mktemp("score_runs")
    common = ["--trainer.logger.init_args.save_dir", str(runs),
              "--data.init_args.train", str(shapes_dir), "--data.init_args.val", str(shapes_dir),
              "--trainer.precision", "bf16-mixed"]  # fmt: skip
    run(T2I, "fit", "--config", "stages/score.yaml", "--config", "stages/tiny/score.yaml", *common)
    run(T2I, "fit", "--config", "stages/captioner.yaml", "--config", "stages/tiny/captioner.yaml", *common)
    return {
        "runs": runs,
        "score": runs / "score" / "checkpoints" / "last.ckpt",
        "captioner": runs / "captioner" / "checkpoints" / "last.ckpt",
    }
