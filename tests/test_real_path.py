"""The real user's path (`make demo-real`): data carved from one captions file, a random-weight CLIP of a
pretrained architecture marked as such, and the chain end to end on real photos."""

from __future__ import annotations

import json
import math
import subprocess

import torch

from t2i_lightning.cli import main
from t2i_lightning.nn.clip import create_clip
from t2i_lightning.nn.random_clip import random_init_of

from .cli_runs import MICRO, ROOT
from .test_evaluate_real import random_inception_state, write_coco_split


def test_a_random_clip_file_loads_back_as_written_and_says_it_is_random(tmp_path, capsys):
    path = tmp_path / "micro-random.safetensors"
    main(["random-clip", "--model", "shapes-cnn-micro", "--out", str(path), "--seed", "3"])
    assert "RANDOM shapes-cnn-micro" in capsys.readouterr().out
    assert random_init_of(path) == "shapes-cnn-micro seed 3"
    torch.manual_seed(3)
    expected = create_clip("shapes-cnn-micro").state_dict()
    loaded = create_clip("shapes-cnn-micro", str(path)).state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    other = tmp_path / "other.safetensors"
    main(["random-clip", "--model", "shapes-cnn-micro", "--out", str(other), "--seed", "4"])
    reseeded = create_clip("shapes-cnn-micro", str(other)).state_dict()
    assert any(not torch.equal(reseeded[k], expected[k]) for k in expected if expected[k].numel() > 1)
    assert random_init_of(tmp_path / "nothing.safetensors") is None


def test_demo_real_runs_the_chain_on_coco_photos_and_says_what_was_random(tmp_path):
    """`make demo-real` (the tiny version: a micro CLIP architecture, the tests' overlay over the paper and
    real ones) on a COCO-format folder: import carved into splits, a random CLIP written and marked,
    extraction, translator and decoder of the embeddings' width, sampling, the evaluation table with
    Inception columns from a local (random) state dict and no judge."""
    images, captions = write_coco_split(tmp_path / "raw", "val", 20, first_id=1)
    inception = tmp_path / "inception.pth"
    torch.save(random_inception_state(), inception)
    data, runs = tmp_path / "data", tmp_path / "runs"
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "demo-real", f"REAL_IMAGES={images}", f"REAL_CAPTIONS={captions}",
         f"REAL_DATA={data}", f"REAL_RUNS={runs}", f"CLIP_MODEL={MICRO}", "REAL_OVERLAY=stages/paper stages/real stages/tiny",
         "REAL_N=4", f"INCEPTION={inception}", "T2I_TIMINGS="],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "*** PATH CHECK: no CLIP= weights file given" in result.stdout
    splits = json.loads((data / "index.json").read_text())["splits"]
    assert {split: entry["count"] for split, entry in splits.items()} == {"train": 12, "val": 4, "test": 4}
    assert (runs / "samples.png").is_file()
    assert (runs / "embed" / "config.yaml").is_file()  # every stage's files under RUNS, none in the repository's runs/
    table = json.loads((runs / "eval" / "table.json").read_text())
    assert "random shapes-cnn-micro seed 0" in table["header"]["PATH CHECK"]
    assert table["header"]["judge"].startswith("none:")
    rows = {row["variant"]: row["metrics"] for row in table["rows"]}
    assert set(rows) == {"real", "full", "decoder_only", "no_translator"}
    for name, metrics in rows.items():
        assert not any(key.startswith("judge") for key in metrics), name
        assert all(math.isfinite(metrics[key]["mean"]) for key in ("fid", "inception_kid", "inception_precision", "clip_score")), name
