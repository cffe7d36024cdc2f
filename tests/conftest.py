"""Shared fixtures: a tiny shapes dataset generated once per test session."""

from __future__ import annotations

import pytest

from t2i_lightning.data.shapes.generate import ShapesConfig, generate_shapes


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """64px shapes shards: 96 train, 40 val, 16 test samples in shards of 16."""
    root = tmp_path_factory.mktemp("shapes")
    config = ShapesConfig(seed=1, size=64, samples_per_shard=16)
    generate_shapes(root, {"train": 96, "val": 40, "test": 16}, config, workers=1, progress=False)
    return root
