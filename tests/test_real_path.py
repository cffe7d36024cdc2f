"""The real user's path (`make demo-real`): data carved from one captions file, a random-weight CLIP of a
pretrained architecture marked as such, and the chain end to end on real photos."""

from __future__ import annotations

import torch

from t2i_lightning.cli import main
from t2i_lightning.nn.clip import create_clip
from t2i_lightning.nn.random_clip import random_init_of


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
