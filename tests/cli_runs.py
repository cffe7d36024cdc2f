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


def step_args(steps: int | None) -> list[str]:
    """Train for ``steps`` and validate at the last one; none: the tiny overlay's own step count."""
    if steps is None:
        return []
    return ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]


def clip_fit_args(runs: Path, data: Path, steps: int | None = None) -> list[str]:
    """`t2i fit --config stages/clip.yaml` for a micro CLIP on ``data``, its run under ``runs/clip/``:
    stages/tiny/clip.yaml's 40 steps, or ``steps``."""
    return [
        T2I, "fit", "--config", "stages/clip.yaml", "--config", "stages/tiny/clip.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), *step_args(steps),
        "--data.init_args.train", str(data), "--data.init_args.val", str(data),
    ]  # fmt: skip


def judge_fit_args(runs: Path, data: Path, steps: int | None = None) -> list[str]:
    """`t2i fit --config stages/judge.yaml` for a micro judge on ``data``, its run under ``runs/judge/``:
    stages/tiny/judge.yaml's 30 steps, or ``steps``."""
    return [
        T2I, "fit", "--config", "stages/judge.yaml", "--config", "stages/tiny/judge.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), *step_args(steps),
        "--data.init_args.train", str(data), "--data.init_args.val", str(data),
    ]  # fmt: skip


def fit_clip(runs: Path, data: Path, steps: int | None = None) -> Path:
    run(*clip_fit_args(runs, data, steps))
    return runs / "clip" / "checkpoints" / "last.ckpt"


def extract_args(clip_ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """`t2i predict --config stages/embed.yaml` with the micro CLIP ``clip_ckpt``: ``data``'s embeddings into ``out``."""
    return [
        T2I, "predict", "--config", "stages/embed.yaml", "--config", "stages/tiny/embed.yaml",
        "--model.init_args.pretrained", str(clip_ckpt), "--model.init_args.out", str(out),
        "--data.init_args.predict", str(data), "--trainer.default_root_dir", str(out.parent), *extra,
    ]  # fmt: skip


def extract(clip_ckpt: Path, data: Path, out: Path, *extra: str, check: bool = True, popen: bool = False):
    args = extract_args(clip_ckpt, data, out, *extra)
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
    """`t2i fit --config stages/decoder.yaml` for a micro decoder on the micro CLIP space's embeddings
    (stages/tiny/decoder.yaml: 6 steps, a grid every 3)."""
    return [
        command, "fit", "--config", "stages/decoder.yaml", "--config", "stages/tiny/decoder.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.conditioning.init_args.stats", str(pipeline["emb"] / "stats.json"),
        "--model.init_args.samples.init_args.translator", str(pipeline["translator"]),
        "--data.init_args.embeddings", str(pipeline["emb"]),
        "--data.init_args.train", str(pipeline["data"]), "--data.init_args.val", str(pipeline["data"]),
    ]  # fmt: skip
