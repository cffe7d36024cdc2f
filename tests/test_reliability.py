"""Kill-and-resume, preemption, numerical faults and atomic checkpoints, through the real ``t2i fit``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from t2i_lightning.data.inspect import read_samples
from t2i_lightning.data.shards import write_shard
from t2i_lightning.data.writer_lock import LOCK_NAME
from t2i_lightning.training.checkpoint_io import INTEGRITY_KEY, AtomicCheckpointIO, tensor_digest
from t2i_lightning.training.finite_guard import NonFiniteGuard
from t2i_lightning.training.rank_seed import rank_seed
from t2i_lightning.training.resume import ResumeError, find_resume_point, move_aside

from .cli_runs import ROOT, T2I, assert_stats_equal_numpy, extract, extract_args, run

TINY = ["--config", "stages/_trainer.yaml", "--config", "tests/configs/tiny_fit.yaml"]


def tiny_fit_args(runs: Path, data: Path, *extra: str) -> list[str]:
    return [
        T2I, "fit", *TINY, "--trainer.logger.init_args.save_dir", str(runs),
        "--data.init_args.train", str(data), "--data.init_args.val", str(data), *extra,
    ]  # fmt: skip


def last(runs: Path) -> dict:
    return torch.load(runs / "tiny" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def wait_for_step(heartbeat: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"the fit ended (exit {process.returncode}) before step {step}:\n{stderr[-3000:]}")
        beat = heartbeat.read_text().strip() if heartbeat.exists() else ""
        if beat and int(beat) >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"no step {step} within {timeout} s")


def popen(args: list[str], new_group: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=new_group,
    )  # fmt: skip


def test_kill_9_in_the_middle_then_the_same_command_resumes(tmp_path, shapes_dir):
    runs, beat = tmp_path / "runs", tmp_path / "beat"
    args = tiny_fit_args(
        runs, shapes_dir, "--trainer.max_steps", "12", "--trainer.callbacks+=tests.tiny_modules.Heartbeat",
        "--trainer.callbacks.path", str(beat),
    )  # fmt: skip
    process = popen(args)
    wait_for_step(beat, 5, process)  # checkpoints are written every 2 steps (val_check_interval)
    process.kill()
    process.wait()
    checkpoints = runs / "tiny" / "checkpoints"
    assert not [p for p in checkpoints.iterdir() if not p.name.endswith(".ckpt")], "a partial file was left"
    step = last(runs)["global_step"]
    assert step >= 4
    result = run(*args)
    assert f"Resuming from {checkpoints / 'last.ckpt'} (step {step})" in result.stderr
    assert last(runs)["global_step"] == 12


def test_sigterm_writes_a_checkpoint_at_the_current_step_and_exits_143(tmp_path, shapes_dir):
    runs, beat = tmp_path / "runs", tmp_path / "beat"
    args = tiny_fit_args(
        runs, shapes_dir, "--trainer.max_steps", "200", "--trainer.val_check_interval", "100",
        "--trainer.check_val_every_n_epoch", "null",
        "--trainer.callbacks+=tests.tiny_modules.Heartbeat", "--trainer.callbacks.path", str(beat),
    )  # fmt: skip
    process = popen(args)
    wait_for_step(beat, 3, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "SIGTERM at step" in stderr and "Traceback" not in stderr
    step = last(runs)["global_step"]
    assert 3 <= step < 100  # written on SIGTERM: no periodic checkpoint comes before step 100
    result = run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", str(step + 2)))
    assert f"(step {step})" in result.stderr and last(runs)["global_step"] == step + 2


def test_sigterm_to_the_whole_process_group_saves_too_and_leaves_no_worker(tmp_path, shapes_dir):
    """What SLURM and `docker stop` do: every process of the job gets SIGTERM. A DataLoader worker used to
    die first, the main process raised 'worker ... killed by signal' and nothing was saved."""
    runs, beat = tmp_path / "runs", tmp_path / "beat"
    args = tiny_fit_args(
        runs, shapes_dir, "--trainer.max_steps", "200", "--trainer.val_check_interval", "100",
        "--trainer.check_val_every_n_epoch", "null", "--data.init_args.num_workers", "1",
        "--trainer.callbacks+=tests.tiny_modules.Heartbeat", "--trainer.callbacks.path", str(beat),
    )  # fmt: skip
    process = popen(args, new_group=True)
    wait_for_step(beat, 3, process)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "SIGTERM at step" in stderr and "Traceback" not in stderr and "killed by signal" not in stderr
    assert 3 <= last(runs)["global_step"] < 100
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # the group is gone: no worker outlived the run
        os.killpg(process.pid, 0)


def test_changed_settings_are_refused_unless_asked_and_fresh_moves_the_old_run_aside(tmp_path, shapes_dir):
    runs = tmp_path / "runs"
    run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "2"))
    changed = tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "4", "--model.init_args.lr", "0.05")
    refused = run(*changed, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "other model settings: lr" in refused.stderr and "--fresh" in refused.stderr
    assert last(runs)["global_step"] == 2  # nothing was touched

    resumed = run(*changed, "--resume-changed-config")
    assert "(step 2)" in resumed.stderr and last(runs)["global_step"] == 4

    fresh = run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "2", "--fresh"))
    assert "Resuming" not in fresh.stderr and last(runs)["global_step"] == 2
    (moved,) = (runs / "tiny").glob("checkpoints.replaced-*")
    assert torch.load(moved / "last.ckpt", weights_only=True)["global_step"] == 4  # the old run is kept


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, shapes_dir):
    runs = tmp_path / "runs"
    args = tiny_fit_args(
        runs, shapes_dir, "--model", "tests.tiny_modules.NonFiniteAtStep", "--model.init_args.nan_at_step", "3",
        "--trainer.max_steps", "8",
    )  # fmt: skip
    result = run(*args, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "non-finite loss or gradient at step 3" in result.stderr
    checkpoint = last(runs)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


class _Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return {"image": torch.full((3, 8, 8), index / 8.0)}


def test_skip_mode_leaves_the_weights_of_a_nan_step_untouched_and_counts_it():
    from tests.tiny_modules import NonFiniteAtStep

    class Recorder(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                self.before = {k: v.clone() for k, v in pl_module.state_dict().items()}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:  # the optimizer "stepped" over the NaN batch
                self.after = {k: v.clone() for k, v in pl_module.state_dict().items()}

    guard, recorder = NonFiniteGuard(action="skip"), Recorder()
    model = NonFiniteAtStep(nan_at_step=2)
    trainer = pl.Trainer(
        max_steps=5, callbacks=[guard, recorder], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, torch.utils.data.DataLoader(_Batches(), batch_size=2))
    assert guard.skipped == 1 and trainer.global_step == 5
    for name, value in recorder.before.items():
        torch.testing.assert_close(recorder.after[name], value, msg=name)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_mode_gives_up_after_too_many_consecutive_non_finite_steps():
    from t2i_lightning.training.finite_guard import NonFiniteLossError
    from tests.tiny_modules import MeanColourRegressor

    class AlwaysNaN(MeanColourRegressor):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * float("nan")

    trainer = pl.Trainer(
        max_steps=50, callbacks=[NonFiniteGuard(action="skip", max_consecutive=3)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite"):
        trainer.fit(AlwaysNaN(), torch.utils.data.DataLoader(_Batches(), batch_size=2))


def test_ddp_on_two_cpu_processes_splits_shards_syncs_losses_and_writes_one_checkpoint(tmp_path, shapes_dir):
    """``strategy=ddp`` with 2 gloo processes: no shard is read by both ranks (training or validation),
    every validation key is read once, the logged validation loss is the mean over both ranks' samples, and
    one set of checkpoint files is written."""
    runs, record = tmp_path / "runs", tmp_path / "record"
    args = tiny_fit_args(
        runs, shapes_dir, "--model", "tests.tiny_modules.RankRecorder", "--model.init_args.record", str(record),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "null",
    )  # fmt: skip
    run(*args)
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]

    def shards(keys: list[str]) -> set[int]:
        return {int(key.rsplit("_", 1)[1]) // 16 for key in keys}  # the fixture writes 16 samples per shard

    for split in ("train", "val"):
        assert ranks[0][split] and ranks[1][split], split
        assert not shards(ranks[0][split]) & shards(ranks[1][split]), f"a {split} shard was read by both ranks"
    val_keys = ranks[0]["val"] + ranks[1]["val"]
    assert len(val_keys) == len(set(val_keys)) == 40  # the fixture's 40 validation samples, each once
    local = [rank["val_loss_sum"] / rank["val_count"] for rank in ranks]
    overall = sum(rank["val_loss_sum"] for rank in ranks) / sum(rank["val_count"] for rank in ranks)
    assert local[0] != pytest.approx(local[1])
    for rank in ranks:  # the sample-weighted mean over both ranks, on both
        assert rank["val_loss_synced"] == pytest.approx(overall, rel=1e-5)
    files = sorted(p.name for p in (runs / "tiny" / "checkpoints").iterdir())
    assert files == ["epoch=1-step=4.ckpt", "last.ckpt"]  # 2 steps per epoch on each of 2 ranks
    # each rank draws its own noise (RankSeeds: a stream per seed and rank)
    assert len(ranks[0]["draws"]) == len(ranks[1]["draws"]) == 4
    assert not {str(d) for d in ranks[0]["draws"]} & {str(d) for d in ranks[1]["draws"]}
    assert rank_seed(0, 1) == rank_seed(0, 1) and len({rank_seed(0, 0), rank_seed(0, 1), rank_seed(1, 0)}) == 3


def test_extraction_on_two_ranks_writes_every_shard_as_one_rank_does(pipeline, tmp_path):
    out = tmp_path / "emb"
    extract(
        pipeline["clip"], pipeline["data"], out,
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    )  # fmt: skip
    single = sorted(p.name for p in pipeline["emb"].glob("*.tar"))
    assert sorted(p.name for p in out.glob("*.tar")) == single and len(single) > 2
    from t2i_lightning.data.embeddings import IMAGE_MEMBER, load_npy
    from t2i_lightning.data.inspect import read_samples

    for name in single:  # same keys in the same order; values equal up to float16 rounding of CPU math
        a, b = read_samples(str(out / name)), read_samples(str(pipeline["emb"] / name))
        assert [x["__key__"] for x in a] == [x["__key__"] for x in b], name
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(load_npy(x[IMAGE_MEMBER]), load_npy(y[IMAGE_MEMBER]), atol=2e-2)
    two, one = (json.loads((d / "stats.json").read_text()) for d in (out, pipeline["emb"]))
    assert two["count"] == one["count"]
    assert_stats_equal_numpy(out)  # rank 0 combined both ranks' shard moments
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]


def gated(path: Path, after: int = 0) -> list[str]:
    """Arguments that hold an extraction before its batch ``after`` until ``path`` exists or it gets SIGTERM."""
    gate = ["--trainer.callbacks+=tests.tiny_modules.Gate", "--trainer.callbacks.path", str(path)]
    return [*gate, "--trainer.callbacks.after", str(after)]


def wait_for(found, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Wait until ``found()`` while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while not found():
        if process.poll() is not None:
            raise AssertionError(f"exit {process.returncode} before {what}:\n{process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def dir_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_sigterm_stops_an_extraction_with_whole_shards_only_and_a_rerun_completes_it(pipeline, tmp_path):
    """Extraction used to ignore SIGTERM and run to the end. SIGTERM to its process group (a DataLoader
    worker included) once the first shard is written, while the next batch is held: it stops after that
    batch, its half-collected shard dropped, no stats.json, exit 143; the same command then finishes it
    to the bytes of an uninterrupted extraction (shards of 16 samples, batches of 8)."""
    out = tmp_path / "emb"
    args = extract_args(pipeline["clip"], pipeline["data"], out, "--data.init_args.num_workers", "1")
    process = popen([*args, *gated(tmp_path / "never", after=2)], new_group=True)
    wait_for(lambda: list(out.glob("*.tar")), process, "first shard")
    signalled = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    print(f"SIGTERM to exit: {time.monotonic() - signalled:.2f} s")
    assert process.returncode == 143, stderr[-2000:]
    assert "SIGTERM: extraction stopped with 1 of" in stderr and "run the same command to resume" in stderr
    assert "Traceback" not in stderr and "killed by signal" not in stderr
    shards = list(out.glob("*.tar"))
    assert len(shards) == 1 and len(read_samples(str(shards[0]))) == 16
    assert not (out / "stats.json").exists() and not list(out.glob("*.tmp")) and not (out / LOCK_NAME).exists()
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # no worker outlived the run
        os.killpg(process.pid, 0)
    extract(pipeline["clip"], pipeline["data"], out, "--data.init_args.num_workers", "1")  # the same command
    assert dir_bytes(out) == dir_bytes(pipeline["emb"])


def test_a_second_extraction_into_a_busy_output_directory_is_refused_at_once(pipeline, tmp_path):
    """Two extractions into one folder: the second used to delete the first's temporary files and the
    first died with [Errno 2]. The second is now refused in one line naming the first; the first ends well."""
    out, go = tmp_path / "emb", tmp_path / "go"
    first = popen([*extract_args(pipeline["clip"], pipeline["data"], out), *gated(go)])
    wait_for((out / LOCK_NAME).exists, first, "lock file")
    started = time.monotonic()
    second = extract(pipeline["clip"], pipeline["data"], out, check=False)
    print(f"second extraction refused in {time.monotonic() - started:.2f} s")
    holder = f"an extraction of embeddings (pid {first.pid} on {socket.gethostname()})"
    assert second.returncode == 1 and second.stderr.strip().splitlines()[-2:] == [
        f"t2i predict: error: {out} is being written by {holder}: wait for it to end, or set model.init_args.out "
        "to another directory", "(set T2I_DEBUG=1 for a traceback)"]  # fmt: skip
    go.touch()
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert dir_bytes(out) == dir_bytes(pipeline["emb"])  # the lock file removed, too


# ------------------------------------------------------------------------------- unit: resume / atomic IO


def flip_bytes_in_a_tensor(path: Path, count: int = 64) -> None:
    """Flip ``count`` bytes inside the largest tensor record of a checkpoint archive, size kept (a disk
    or copy error torch does not notice: the archive still loads)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        handle.seek(start)
        flipped = bytes(b ^ 0xFF for b in handle.read(count))
        handle.seek(start)
        handle.write(flipped)


def test_a_bit_flipped_last_checkpoint_is_passed_over_and_refused_where_loaded(tmp_path, shapes_dir):
    """The issue's case: 64 flipped bytes inside a tensor of last.ckpt resumed silently on damaged weights.
    Each checkpoint records its tensors' sha256; resume passes over the damaged one to the newest good
    one, and --ckpt_path and the pipeline's loaders refuse it in one line."""
    runs = tmp_path / "runs"
    run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "4"))
    checkpoints = runs / "tiny" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)[INTEGRITY_KEY]
    flip_bytes_in_a_tensor(checkpoints / "last.ckpt")
    torch.load(checkpoints / "last.ckpt", weights_only=True)  # torch itself does not notice
    resumed = run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "6"))
    assert "Unreadable checkpoint passed over: last.ckpt: CorruptCheckpointError" in resumed.stderr
    assert f"Resuming from {checkpoints / 'epoch=0-step=4.ckpt'} (step 4)" in resumed.stderr
    assert last(runs)["global_step"] == 6
    flip_bytes_in_a_tensor(checkpoints / "last.ckpt")
    explicit = run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "8", "--ckpt_path",
                                  str(checkpoints / "last.ckpt")), check=False)  # fmt: skip
    assert explicit.returncode == 1 and "is corrupt: its tensors do not match" in explicit.stderr
    assert "Traceback" not in explicit.stderr


def test_a_second_fit_on_a_busy_run_directory_is_refused_and_stale_save_temporaries_are_removed(tmp_path, shapes_dir):
    import fcntl


    runs = tmp_path / "runs"
    run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "2"))
    checkpoints = runs / "tiny" / "checkpoints"
    leftover = checkpoints / ".last.ckpt.k1ll3d.tmp"  # what a kill during a save leaves
    leftover.write_bytes(b"part of a checkpoint")
    with open(runs / "tiny" / LOCK_NAME, "a+") as held:  # another fit holding the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "4"), check=False)
    assert busy.returncode == 1 and f"{runs / 'tiny'} is being written by another process" in busy.stderr
    assert "Traceback" not in busy.stderr and leftover.exists()
    resumed = run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "4"))
    assert "Removed 1 temporary file(s) a killed save left" in resumed.stderr and not leftover.exists()
    assert last(runs)["global_step"] == 4


def _fake_checkpoint(path: Path, step: int, class_path: str = "pkg.Stage", **hparams) -> None:
    torch.save({"global_step": step, "hyper_parameters": {"_class_path": class_path, **hparams}}, path)


def test_resume_point_passes_over_an_unreadable_last_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path / "epoch=0-step=3.ckpt", 3, lr=0.1)
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    point = find_resume_point(tmp_path, "pkg.Stage", {"lr": 0.1})
    assert point.path.name == "epoch=0-step=3.ckpt" and point.global_step == 3
    assert point.skipped and point.skipped[0].startswith("last.ckpt")


def test_resume_point_takes_the_furthest_trained_checkpoint_over_an_older_last(tmp_path):
    _fake_checkpoint(tmp_path / "epoch=2-step=12.ckpt", 12, lr=0.1)
    _fake_checkpoint(tmp_path / "last.ckpt", 8, lr=0.1)  # written after it, but at an earlier step
    point = find_resume_point(tmp_path, "pkg.Stage", {"lr": 0.1})
    assert point.path.name == "epoch=2-step=12.ckpt" and point.global_step == 12
    _fake_checkpoint(tmp_path / "last.ckpt", 12, lr=0.1)  # a tie: last.ckpt
    assert find_resume_point(tmp_path, "pkg.Stage", {"lr": 0.1}).path.name == "last.ckpt"


def test_resume_point_refuses_another_stage_and_unreadable_runs(tmp_path):
    _fake_checkpoint(tmp_path / "last.ckpt", 5, class_path="pkg.Captioner")
    with pytest.raises(ResumeError, match="written by pkg.Captioner, but this config trains pkg.Decoder"):
        find_resume_point(tmp_path, "pkg.Decoder", {})
    (tmp_path / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeError, match="No checkpoint .* can be read"):
        find_resume_point(tmp_path, "pkg.Decoder", {})
    assert find_resume_point(tmp_path / "none", "pkg.Decoder", {}) is None


def test_nested_setting_changes_are_named(tmp_path):
    _fake_checkpoint(tmp_path / "last.ckpt", 1, net={"class_path": "U", "init_args": {"width": 32}})
    with pytest.raises(ResumeError, match=r"net\.init_args\.width"):
        find_resume_point(tmp_path, "pkg.Stage", {"net": {"class_path": "U", "init_args": {"width": 64}}})
    assert move_aside(tmp_path).name.startswith(f"{tmp_path.name}.replaced-")


def test_an_option_added_after_the_checkpoint_resumes_when_left_at_its_default(tmp_path):
    """A checkpoint written before an argument existed lacks it: left at the class's default (top level or a
    nested class's init_args) it is no change; set to anything else it is named."""
    stage, unet = "t2i_lightning.stages.diffusion.DiffusionStage", "t2i_lightning.nn.unet.ConditionalUNet"
    _fake_checkpoint(tmp_path / "last.ckpt", 7, class_path=stage, lr=0.1, net={"class_path": unet, "init_args": {}})

    def current(min_snr_gamma: float, layout_size: int) -> dict:
        net = {"class_path": unet, "init_args": {"layout_size": layout_size}}
        return {"lr": 0.1, "min_snr_gamma": min_snr_gamma, "net": net}

    assert find_resume_point(tmp_path, stage, current(0.0, 0)).global_step == 7
    with pytest.raises(ResumeError, match=r"other model settings: min_snr_gamma;"):
        find_resume_point(tmp_path, stage, current(5.0, 0))
    with pytest.raises(ResumeError, match=r"other model settings: net\.init_args\.layout_size;"):
        find_resume_point(tmp_path, stage, current(0.0, 8))


def test_a_checkpoint_save_that_dies_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)

    def dies_midway(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"global_step": 1, INTEGRITY_KEY: tensor_digest({"global_step": 1})}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_last_checkpoint_holds_the_final_step_when_training_ends_between_validations(tmp_path, shapes_dir):
    """Validation (and so ModelCheckpoint's save) every 2 steps; a run ending at step 5 must still
    leave last.ckpt at step 5, or a resumed run would redo (and a next stage miss) its final step."""
    runs = tmp_path / "runs"
    run(*tiny_fit_args(runs, shapes_dir, "--trainer.max_steps", "5"))
    assert last(runs)["global_step"] == 5


def test_another_ranks_sweep_of_stale_temporaries_spares_a_writability_probe(tmp_path, monkeypatch):
    """Replays the race of a two-rank extraction: rank 0 sweeps ``.*.tmp`` from the output directory
    while rank 1's writability probe is open there. The probe must survive it."""
    import tempfile

    from t2i_lightning.data.shards import check_writable, remove_stale_temporaries

    (tmp_path / ".shard-000000.tar.abc.tmp").write_bytes(b"left by a killed writer")
    real = tempfile.NamedTemporaryFile

    def swept_while_open(*args, **kwargs):
        handle = real(*args, **kwargs)
        remove_stale_temporaries(tmp_path)  # the other rank, between the probe's creation and its close
        return handle

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", swept_while_open)
    assert check_writable(tmp_path, directory=True) == tmp_path
    assert list(tmp_path.iterdir()) == []  # the stale file is gone, the probe removed itself


def test_a_skip_rate_over_the_limit_on_one_ddp_rank_stops_both_ranks_together(tmp_path, shapes_dir):
    """Only rank 0's shards are damaged (DDP gives rank r the shards r, r + 2, ...): the ranks sum their
    counts every ``sync_every`` batches, so both stop with the same message instead of rank 1 waiting on
    the stopped rank 0 until the collective times out (the subprocess timeout catches such a hang)."""
    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    for shard in sorted(data.glob("train-*.tar"))[0::2]:
        samples = read_samples(str(shard))
        for sample in samples[::2]:  # half of each rank-0 shard's images unreadable
            sample["png"] = b"not a png"
        write_shard(shard, samples)
    config = tmp_path / "health.yaml"
    config.write_text(
        "trainer:\n  max_steps: 40\n  callbacks:\n"
        "    - class_path: t2i_lightning.training.data_health.SkippedSamplesLogger\n"
        "      init_args: {max_skip_rate: 0.05, min_samples: 16, sync_every: 2}\n"
    )
    args = tiny_fit_args(tmp_path / "runs", data, "--config", str(config), "--trainer.accelerator", "cpu",
                         "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.limit_val_batches", "0",
                         "--data.init_args.epoch_size", "640")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    stops = [line for line in result.stderr.splitlines() if "training samples were skipped" in line]
    assert len(stops) == 2 and stops[0] == stops[1], result.stderr[-3000:]  # each rank, the same totals
    assert "train-000000.tar" in stops[0] and "train-000001.tar" not in stops[0]


EXIT_WITH_LIVE_WORKERS = """
import sys, torch
from t2i_lightning.data.workers import detach_worker
loader = torch.utils.data.DataLoader(range(100), batch_size=2, num_workers=2, worker_init_fn=detach_worker)
batches = iter(loader)
next(batches)  # the workers run, ignoring SIGTERM; the iterator stays alive into the exit (as in a traceback)
sys.exit("stopped with the loader's workers alive")
"""


def test_a_main_process_exiting_with_its_loader_alive_does_not_wait_on_the_workers_forever():
    """multiprocessing's exit handler SIGTERMs daemonic children and joins them; workers ignore SIGTERM,
    so the main process kills them first (the decoder-fit error test hung on this now and then)."""
    result = subprocess.run([sys.executable, "-c", EXIT_WITH_LIVE_WORKERS], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 1 and "stopped with the loader's workers alive" in result.stderr


def wait_until_group_is_gone(pgid: int, timeout: float = 20) -> float:
    """Seconds until no process of group ``pgid`` is left (the test fails past ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return time.monotonic() - start
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
    raise AssertionError(f"processes of group {pgid} outlived their killed parent by {timeout} s")


def children_of(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in found.read_text().split()] if found.exists() else []


@pytest.mark.parametrize("job", ["data", "fit"])
def test_workers_exit_when_their_main_process_is_killed_outright(tmp_path, shapes_dir, job):
    """kill -9 (or the OOM killer) runs no exit handler. `t2i data`'s pool workers used to finish their shard and
    then wait on their job queue forever (~300 MB each); DataLoader workers must not outlive a fit either."""
    if job == "data":
        args = [T2I, "data", "shapes", "--out", str(tmp_path / "data"), "--train", "200000", "--val", "0",
                "--test", "0", "--size", "64", "--workers", "2", "--samples-per-shard", "100"]  # fmt: skip
        process = popen(args, new_group=True)
        deadline = time.monotonic() + 60
        while len(children_of(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        while not list((tmp_path / "data").glob("train-*.tar")) and time.monotonic() < deadline:
            time.sleep(0.2)  # the pool is at work
    else:
        beat = tmp_path / "beat"
        args = tiny_fit_args(
            tmp_path / "runs", shapes_dir, "--trainer.max_steps", "500", "--data.init_args.num_workers", "2",
            "--trainer.callbacks+=tests.tiny_modules.Heartbeat", "--trainer.callbacks.path", str(beat),
        )  # fmt: skip
        process = popen(args, new_group=True)
        wait_for_step(beat, 3, process)
    workers = children_of(process.pid)
    assert len(workers) >= 2, workers
    process.kill()
    process.wait(timeout=30)
    wait_until_group_is_gone(process.pid)
