"""Bad input to the `t2i` commands, safe loading, and dataset generation killed with SIGKILL.

Every user error ends in one line on stderr naming the problem and a non-zero exit, before any
long work and never with a traceback. Most cases call the CLI's entry point (``t2i_lightning.cli.main``,
what the console script runs) in this process: the same parsing, checks and error reporting without a
~7 s start-up per case. A few run the installed ``t2i`` end to end. The checkpoint of another stage
is a CLIP stage's, written by one step of `t2i fit --config stages/clip.yaml` in this process.
"""

from __future__ import annotations

import ast
import io
import os
import re
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i_lightning.cli import main
from t2i_lightning.data.embedding_datamodule import EmbeddingDataModule
from t2i_lightning.data.embeddings import npy_bytes
from t2i_lightning.data.shapes.generate import ShapesConfig, generate_shapes
from t2i_lightning.data.shards import write_shard
from t2i_lightning.nn.captioner import CaptionVocabulary
from t2i_lightning.nn.clip import create_clip, tokenizer_for, warn_if_truncated
from t2i_lightning.nn.translator import ResidualMLP
from t2i_lightning.pipeline import TextToImageEmbedding
from t2i_lightning.stages.translator import TranslatorStage
from t2i_lightning.training.checkpoint_io import AtomicCheckpointIO

from .cli_runs import MICRO, ROOT, T2I, clip_fit_args, run

LONG_PROMPT = " ".join(["a red circle to the left of a blue square"] * 4)


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """User errors are reported as one line only without T2I_DEBUG."""
    monkeypatch.delenv("T2I_DEBUG", raising=False)


@pytest.fixture(scope="module")
def clip_checkpoint(shapes_dir, tmp_path_factory) -> Path:
    """A CLIPStage checkpoint written by `t2i fit` (one step of the micro CLIP): another stage's for
    every command that takes a checkpoint."""
    runs = tmp_path_factory.mktemp("bad_input_clip") / "runs"
    main(clip_fit_args(runs, shapes_dir, steps=1)[1:])
    return runs / "clip" / "checkpoints" / "last.ckpt"


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A file where an output's directory should be: no output below it can be written (even by root)."""
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return path


def fails(argv: list[str], capsys) -> str:
    """Run ``t2i ARGV`` through the CLI's entry point; it must exit non-zero without a traceback.
    Returns what the user reads: the exit message, or stderr for argparse/jsonargparse errors."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    code = exit_info.value.code
    assert code not in (0, None) and "Traceback" not in err
    return code if isinstance(code, str) else err


# --------------------------------------------------------------------------- missing or misspelt paths


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate-guidance", "--score", "nowhere/last.ckpt", "--guidance", "0"], "make train-score"),
        (["evaluate", "--config", "nowhere.yaml"], "nowhere.yaml"),
        (["data", "inspect", "nowhere/shards"], "nowhere/shards"),
        (["fit", "--config", "stages/nowhere.yaml"], "nowhere.yaml"),
    ],
)  # fmt: skip
def test_a_missing_path_is_named(argv, message, tmp_path, capsys):
    out = [] if argv[0] in ("data", "fit") or "--config" in argv else ["--out", tmp_path / "x.png"]
    assert message in fails([*argv, *out], capsys)


@pytest.mark.parametrize("option", ["--from-image", "--image-guidance"])
def test_a_missing_image_is_named_before_any_model_is_loaded(option, clip_checkpoint, tmp_path, capsys):
    """The decoder named here is another stage's checkpoint: it is never loaded."""
    prompt = ["--prompt", "a red circle"] if option == "--image-guidance" else []
    message = fails(["sample", *prompt, option, "nowhere.png", "--decoder", clip_checkpoint, "--out", tmp_path / "x.png"],
                    capsys)  # fmt: skip
    assert f"Image not found: nowhere.png ({option})" in message


def test_a_file_that_is_not_an_image_or_not_a_checkpoint_is_named(blocked, tmp_path, capsys):
    message = fails(["upsample", "--in", blocked, "--out", tmp_path / "x.png", "--upsampler", "nowhere.ckpt"], capsys)
    assert f"Not a readable image: {blocked}" in message
    message = fails(["sample", "--prompt", "a red circle", "--decoder", blocked, "--out", tmp_path / "x.png"], capsys)
    assert f"{blocked} is not a readable checkpoint" in message


# --------------------------------------------------------------------------- a checkpoint of another stage


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["sample", "--prompt", "a red circle", "--decoder", "{clip}"], "not a checkpoint of the decoder stage but of the clip stage"),
        (["sample", "--method", "score", "--prompt", "a red circle", "--score", "{clip}"], "not a checkpoint of the score stage but of the clip stage"),
        (["evaluate-guidance", "--prompts", "a red circle", "--score", "{clip}"], "not a checkpoint of the score stage but of the clip stage"),
        (["embed-text", "a red circle", "--translator", "{clip}"], "not a checkpoint of the translator stage but of the clip stage"),
        (["evaluate-upsampler", "--upsampler", "{clip}"], "not a checkpoint of the upsampler stage but of the clip stage"),
        (["evaluate", "--judge", "{clip}"], "not a checkpoint of the judge stage but of the clip stage"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_another_stage_names_both_stages(argv, expected, clip_checkpoint, tmp_path, capsys):
    argv = [str(clip_checkpoint) if a == "{clip}" else a for a in argv]
    out = [] if argv[0] == "embed-text" else ["--out", tmp_path / "out"]
    assert expected in fails([*argv, *out], capsys)


def test_wrong_stage_checkpoints_through_the_installed_command(clip_checkpoint, tmp_path):
    """End to end: the message on stderr, exit 1, no traceback; `fit --ckpt_path` is refused before
    LightningCLI swaps the config's model for the checkpoint's (it did, and trained the wrong stage)."""
    sample = run(T2I, "sample", "--prompt", "a red circle", "--decoder", str(clip_checkpoint),
                 "--out", str(tmp_path / "x.png"), check=False)  # fmt: skip
    fit = run(T2I, "fit", "--config", "stages/translator.yaml", "--ckpt_path", str(clip_checkpoint),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), check=False)  # fmt: skip
    for result, message in [(sample, "is not a checkpoint of the decoder stage but of the clip stage"),
                            (fit, "was written by t2i_lightning.stages.clip.CLIPStage, but this config trains "
                                  "t2i_lightning.stages.translator.TranslatorStage")]:  # fmt: skip
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- config keys, prompts, sizes, numbers


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model.init_args.lrr", "3"], "TranslatorStage': Option 'lrr' is not accepted"),
        (["--trainer.max_step", "3"], "unrecognized arguments: --trainer.max_step 3"),  # no prefix taken for max_steps
        (["--config", "{bad_yaml}"], "does not accept option 'trainer.max_stepz'"),
    ],
)  # fmt: skip
def test_a_mistyped_stage_key_is_one_line_not_the_usage(flags, message, tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("trainer:\n  max_stepz: 3\n")
    flags = [str(bad_yaml) if f == "{bad_yaml}" else f for f in flags]
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", "stages/translator.yaml", *flags])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    lines = err.splitlines()  # the program is t2i or lightning, what sys.argv[0] is
    assert len(lines) == 2 and re.match(r"\S+ fit: error: ", lines[0]) and message in lines[0], err[-2000:]
    assert re.fullmatch(r"\(\S+ fit --help lists the options\)", lines[1])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--config", "stages/translator.yaml", "--trainer.max_stepz", "3"], "--trainer.max_stepz"),
        (["fit", "--config", "stages/translator.yaml", "--model.init_args.bogus", "1"], "Option 'bogus' is not accepted"),
        (["fit", "--config", "stages/score.yaml", "--model.init_args.net.init_args.image_size", "33"],
         "not divisible by the U-Net's downsampling factor 4"),
        (["evaluate-guidance", "--prompts", "  "], "Captions must not be empty"),
        (["sample", "--mix", "a red circle", " "], "Captions must not be empty"),
        (["sample", "--prompt", "a red circle", "--size", "0"], "--size must be positive"),
        (["sample", "--prompt", "a red circle", "--size", "-8"], "--size must be positive"),
        (["sample", "--prompt", "a red circle", "--ig-scale", "-0.1"], "must be >= 0"),
        (["evaluate", "--cfg", "-1"], "argument --cfg: must be >= 0"),
        (["evaluate-guidance", "--guidance", "0", "-1"], "--guidance must be >= 0"),
        (["evaluate", "--n", "0"], "--n must be positive"),
        (["evaluate-guidance", "--n", "0"], "--n must be positive"),
        (["evaluate-upsampler", "--n", "-1"], "--n must be positive"),
        (["bench", "sampling", "--n", "0"], "--n must be positive"),
        (["data", "inspect", "{shapes}", "--n", "0"], "--n must be positive"),
        (["embed-text", "a red circle", "--k", "0"], "--k must be positive"),
        (["probe-layout", "--steps", "0"], "--steps must be positive"),
        (["probe-layout", "--emb", "{shapes}"], "No stats.json"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_before_any_model_is_loaded(argv, message, shapes_dir, tmp_path, capsys):
    argv = [str(shapes_dir) if a == "{shapes}" else a for a in argv]
    out = ["--out", tmp_path / "out"] if argv[0] in ("sample", "evaluate", "evaluate-guidance", "evaluate-upsampler") else []
    if argv[0] == "fit":
        out = ["--trainer.logger.init_args.save_dir", tmp_path / "runs"]
    assert message in fails([*argv, *out], capsys)
    assert not (tmp_path / "runs").exists()


def test_a_prompt_longer_than_the_tokenizer_context_is_truncated_with_a_warning():
    """The CLIP text side of `t2i sample`/`embed-text` and the captioner of `--method score` both warn."""
    translator = TranslatorStage(ResidualMLP(in_dim=32, out_dim=32, width=32, depth=1))
    chain = TextToImageEmbedding(create_clip(MICRO), tokenizer_for(MICRO), translator)
    with pytest.warns(UserWarning, match="longer than the tokenizer's context of 32 tokens are truncated"):
        assert chain([LONG_PROMPT]).shape == (1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain(["a red circle"])  # a prompt that fits gives no warning
    with pytest.warns(UserWarning, match="truncated"):
        warn_if_truncated(CaptionVocabulary("shapes", 24).bpe, [LONG_PROMPT])


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--prompt", "a red circle", "--decoder", "nowhere.ckpt"],
        ["sample", "--method", "score", "--prompt", "a red circle", "--score", "nowhere.ckpt"],
        ["upsample", "--in", "{image}", "--upsampler", "nowhere.ckpt"],
        ["evaluate-guidance", "--score", "nowhere.ckpt"],
        ["evaluate-upsampler", "--upsampler", "nowhere.ckpt"],
        ["evaluate", "--judge", "nowhere.ckpt"],
        ["data", "shapes", "--train", "4"],
        ["data", "inspect", "{shapes}"],
    ],
)  # fmt: skip
def test_an_unwritable_output_fails_before_any_work(argv, blocked, shapes_dir, capsys):
    """The output is checked first: the checkpoints named here do not exist and are never reached."""
    image = sorted(shapes_dir.glob("*.tar"))[0]  # any existing file stands for the input image
    argv = [str(shapes_dir) if a == "{shapes}" else str(image) if a == "{image}" else a for a in argv]
    message = fails([*argv, "--out", blocked / "sub" / "out.png"], capsys)
    assert f"Cannot write output {blocked / 'sub' / 'out.png'}: {blocked} is a file, not a directory" in message


def test_fit_into_an_unwritable_run_directory_fails_before_training(blocked, shapes_dir, capsys):
    message = fails(["fit", "--config", "stages/_trainer.yaml", "--config", "tests/configs/tiny_fit.yaml",
                     "--data.init_args.train", shapes_dir, "--data.init_args.val", "null",
                     "--trainer.logger.init_args.save_dir", blocked / "runs"], capsys)  # fmt: skip
    assert f"Cannot write output {blocked / 'runs' / 'tiny'}: {blocked} is a file, not a directory" in message


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write lands on /dev/full, where the kernel answers ENOSPC as on a full file system."""
    import tempfile

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    real_mkstemp = tempfile.mkstemp

    def onto_dev_full(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", onto_dev_full)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_what_was_there(full_disk, shapes_dir, tmp_path, capsys):
    """Before: chained tracebacks ending in torch's 'unexpected pos 29469696 vs 29469584', no path named."""
    from t2i_lightning.data.shards import DiskFullError, write_json_atomic

    message = fails(["data", "shapes", "--out", tmp_path / "data", "--train", "4", "--val", "0", "--test", "0",
                     "--size", "32"], capsys)  # fmt: skip
    assert message.count("\n") <= 1 and f"No space left on the device to write {tmp_path / 'data'}/" in message
    assert "train-000000.tar" in message or "pending" in message

    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"the previous checkpoint")
    with pytest.raises(DiskFullError, match=f"No space left on the device to write {checkpoint} "):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(100_000)}}, checkpoint)
    assert checkpoint.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) != []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    with pytest.raises(DiskFullError, match="stats.json"):
        write_json_atomic(tmp_path / "stats.json", {"count": 1})


def test_a_fit_whose_checkpoint_hits_a_full_disk_stops_in_one_line(full_disk, shapes_dir, tmp_path, capsys):
    message = fails(["fit", "--config", "stages/_trainer.yaml", "--config", "tests/configs/tiny_fit.yaml",
                     "--data.init_args.train", shapes_dir, "--data.init_args.val", shapes_dir, "--trainer.max_steps", "2",
                     "--trainer.logger.init_args.save_dir", tmp_path / "runs"], capsys)  # fmt: skip
    assert f"No space left on the device to write {tmp_path / 'runs' / 'tiny'}" in message and ".ckpt" in message


def test_an_output_that_is_a_directory_is_refused_and_a_missing_directory_is_created(shapes_dir, tmp_path, capsys):
    assert "is a directory: give a file name" in fails(["sample", "--prompt", "a red circle", "--out", tmp_path], capsys)
    grid = tmp_path / "new" / "dir" / "grid.png"
    main(["data", "inspect", str(shapes_dir), "--n", "2", "--out", str(grid)])
    assert grid.is_file() and not list(grid.parent.glob(".*"))


def test_inspect_names_a_truncated_shard_and_fails_cleanly_when_every_shard_is(shapes_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    cut = data / "train-000000.tar"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 5])  # a copy killed part way
    import tarfile

    with tarfile.open(data / "val-000000.tar") as tar:  # cut between two samples: tar reads it without error
        boundary = next(m.offset for m in tar if m.name.startswith("val_0000003."))
    whole = (data / "val-000000.tar").read_bytes()
    (data / "val-000000.tar").write_bytes(whole[:boundary])
    main(["data", "inspect", str(data), "--n", "2"])
    out = capsys.readouterr().out
    assert f"damaged: {cut} (ReadError: unexpected end of data, after" in out and "captions (" in out
    assert f"damaged: {data / 'val-000000.tar'} (the tar ends early, 16 samples recorded, after 3 readable" in out
    for shard in data.glob("*.tar"):
        shard.write_bytes(shard.read_bytes()[:700])
    assert "Every shard of" in fails(["data", "inspect", data], capsys)


def test_an_error_raised_in_a_dataloader_worker_reads_as_its_own_message():
    """torch re-raises a worker's exception with the worker's whole traceback as its message (about 60 lines
    for a decoder fit on another dataset's embeddings); the user reads the original line."""
    from torch._utils import ExceptionWrapper

    from t2i_lightning.cli import user_message
    from t2i_lightning.data.decode import ShardMismatchError

    try:
        raise ShardMismatchError("Image shard a.tar has no embedding shard b.tar: run `make embed` for this dataset")
    except ShardMismatchError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ShardMismatchError) as caught:
        wrapped.reraise()
    assert "Original Traceback" in str(caught.value)
    assert user_message(caught.value) == "Image shard a.tar has no embedding shard b.tar: run `make embed` for this dataset"
    assert user_message(ValueError("plain: message")) == "plain: message"


# --------------------------------------------------------------------------- safe loading


class RunsCode:
    """Unpickling this runs ``os.makedirs(path)``: a stand-in for a malicious payload."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_a_checkpoint_holding_pickled_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "t2i_lightning.stages.diffusion.DiffusionStage"}, "state_dict": {}, "x": RunsCode(marker)}, evil)
    message = fails(["sample", "--prompt", "a red circle", "--decoder", evil, "--out", tmp_path / "x.png"], capsys)
    assert f"{evil} is not a readable checkpoint (UnpicklingError" in message
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(evil)  # Lightning's own loading (resume, --ckpt_path)
    assert not marker.exists()


def test_a_pickled_npy_member_is_skipped_and_counted_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    vector = np.zeros(4, dtype=np.float16)
    buffer = io.BytesIO()
    np.save(buffer, np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
    samples = [{"__key__": f"k{i}", "img.npy": npy_bytes(vector), "txt.npy": npy_bytes(vector)} for i in range(3)]
    samples[1]["img.npy"] = buffer.getvalue()
    write_shard(tmp_path / "val-000000.tar", samples)
    data = EmbeddingDataModule(train=None, val=str(tmp_path), batch_size=8, num_workers=0)
    data.setup("validate")
    batches = list(data.val_dataloader())
    assert [k for b in batches for k in b["key"]] == ["k0", "k2"]
    assert sum(int(b["skipped"]) for b in batches) == 1
    assert not marker.exists()


def _unsafe_calls(path: Path) -> list[str]:
    """Calls in a source file that could unpickle or run a shell: torch.load / load_from_checkpoint without
    ``weights_only=True``, np.load without ``allow_pickle=False``, webdataset decoders, pickle, shells. Not
    counted: raising pickle's errors (nn/torchscript_weights.py's restricted unpickler refuses with them)
    and a subprocess that runs this interpreter from an argument list (no shell: the start-up bench)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        first = node.args[0] if node.args else None
        this_python = isinstance(first, ast.List) and first.elts and ast.unparse(first.elts[0]) == "sys.executable"
        if name.endswith("Error") or name.startswith("subprocess.") and this_python and "shell" not in keywords:
            continue
        if (
            (name == "torch.load" or name.endswith(".load_from_checkpoint")) and keywords.get("weights_only") != "True"
            or name in ("np.load", "numpy.load") and keywords.get("allow_pickle") != "False"
            or name.startswith(("wds.decode", "webdataset.decode", "pickle.", "subprocess.", "os.system", "os.popen"))
            or keywords.get("shell") == "True"
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_the_package_never_unpickles_or_runs_a_shell():
    assert [call for path in sorted((ROOT / "t2i_lightning").rglob("*.py")) for call in _unsafe_calls(path)] == []


# --------------------------------------------------------------------------- dataset generation killed midway


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_dataset_generation_killed_midway_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    """SIGKILL `t2i data shapes` once its first shard is complete: every *.tar left is whole, and the
    same command run again gives the files an uninterrupted run gives, byte for byte."""
    counts, config = {"train": 800}, ShapesConfig(seed=3, size=32, samples_per_shard=40)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    generate_shapes(reference, counts, config, progress=False)
    argv = ["data", "shapes", "--out", str(killed), "--train", "800", "--val", "0", "--test", "0", "--size", "32",
            "--seed", "3", "--samples-per-shard", "40"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([T2I, *argv], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (killed / "train-000000.tar").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    left = _files(killed)
    expected = _files(reference)
    assert "index.json" not in left, "the run finished before it was killed"
    assert all(left[name] == expected[name] for name in left if name.endswith(".tar")), "a partial shard under a final name"
    main(argv)
    assert _files(killed) == expected and not list(killed.glob(".*"))
