"""Running the real ``t2i`` CLI from tests: subprocess helpers and the micro CLIP-space recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T2I = str(Path(sys.executable).parent / "t2i")
MICRO = "shapes-cnn-micro"


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}")
    return result


def make_dry_run(*targets_and_variables: str) -> list[str]:
    """The commands ``make -n`` prints for ``targets_and_variables``, one per line (continuations joined)."""
    cmd = ["make", "-n", "--no-print-directory", "-C", str(ROOT), *targets_and_variables]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return out.replace("\\\n", " ").splitlines()


def clip_fit_args(runs: Path, data: Path, steps: int) -> list[str]:
    """`t2i fit --config stages/clip.yaml` for a micro CLIP on ``data``, its run under ``runs/clip/``."""
    return [
        T2I, "fit", "--config", "stages/clip.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps), "--trainer.log_every_n_steps", "1",
        "--model.init_args.model_name", MICRO, "--model.init_args.warmup_steps", "5",
        "--data.init_args.train", str(data), "--data.init_args.val", str(data),
        "--data.init_args.image_size", "32", "--data.init_args.batch_size", "32",
        "--data.init_args.num_workers", "0", "--data.init_args.epoch_size", "320",
    ]  # fmt: skip


def judge_fit_args(runs: Path, data: Path, steps: int) -> list[str]:
    """`t2i fit --config stages/judge.yaml` for a micro judge on ``data``, its run under ``runs/judge/``."""
    return [
        T2I, "fit", "--config", "stages/judge.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps), "--trainer.log_every_n_steps", "1",
        "--model.init_args.net.init_args.channels", "[16, 32]", "--model.init_args.net.init_args.groups", "8",
        "--model.init_args.warmup_steps", "3",
        "--data.init_args.train", str(data), "--data.init_args.val", str(data),
        "--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0", "--data.init_args.epoch_size", "96",
    ]  # fmt: skip


def fit_clip(runs: Path, data: Path, steps: int = 40) -> Path:
    run(*clip_fit_args(runs, data, steps))
    return runs / "clip" / "checkpoints" / "last.ckpt"


def extract(clip_ckpt: Path, data: Path, out: Path, *extra: str, check: bool = True, popen: bool = False):
    args = [
        T2I, "predict", "--config", "stages/embed.yaml",
        "--model.init_args.model_name", MICRO, "--model.init_args.pretrained", str(clip_ckpt),
        "--model.init_args.out", str(out), "--data.init_args.predict", str(data),
        "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0",
        "--trainer.default_root_dir", str(out.parent), *extra,
    ]  # fmt: skip
    if popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run(*args, check=check)


def assert_stats_equal_numpy(emb: Path) -> None:
    """``stats.json`` of an embedding directory holds numpy's float64 mean and std of its written arrays."""
    import numpy as np

    from t2i_lightning.data.embeddings import IMAGE_MEMBER, TEXT_MEMBER, load_npy
    from t2i_lightning.data.inspect import read_samples

    img, txt = [], []
    for shard in sorted(emb.glob("*.tar")):
        for sample in read_samples(str(shard)):
            img.append(load_npy(sample[IMAGE_MEMBER]))
            txt.append(load_npy(sample[TEXT_MEMBER]))
    assert img[0].dtype == np.float16
    stats = json.loads((emb / "stats.json").read_text())
    assert stats["count"] == len(img)
    for side, arrays in (("img", img), ("txt", txt)):
        rows = np.stack(arrays).astype(np.float64)
        np.testing.assert_allclose(stats[f"mean_{side}"], rows.mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(stats[f"std_{side}"], rows.std(0), rtol=0, atol=1e-12)


def scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def decoder_args(pipeline: dict, runs: Path, command: str = T2I) -> list[str]:
    """`t2i fit --config stages/decoder.yaml` for a micro decoder on the micro CLIP space's embeddings."""
    net = "--model.init_args.net.init_args."
    return [
        command, "fit", "--config", "stages/decoder.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
        f"{net}image_size", "32", f"{net}base_channels", "16", f"{net}channel_mult", "[1, 2]",
        f"{net}attention_resolutions", "[16]", f"{net}head_channels", "16", f"{net}groups", "8",
        f"{net}cond_dim", "32",
        "--model.init_args.stats", str(pipeline["emb"] / "stats.json"),
        "--model.init_args.warmup_steps", "2", "--model.init_args.ema_decay", "0.9", "--model.init_args.ema_start_step", "2",
        "--model.init_args.samples.init_args.n_reconstructions", "4",
        "--model.init_args.samples.init_args.prompts", '["a red circle", "two blue squares"]',
        "--model.init_args.samples.init_args.translator", str(pipeline["translator"]),
        "--model.init_args.samples.init_args.steps", "3",
        "--data.init_args.embeddings", str(pipeline["emb"]),
        "--data.init_args.train", str(pipeline["data"]), "--data.init_args.val", str(pipeline["data"]),
        "--data.init_args.image_size", "32", "--data.init_args.batch_size", "8",
        "--data.init_args.num_workers", "0", "--data.init_args.epoch_size", "48",
    ]  # fmt: skip
