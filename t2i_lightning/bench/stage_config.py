"""Reading the benchmarks' settings from the stage configs themselves, so a bench measures what
``make train-decoder`` runs (its U-Net, batch size, data options and the shared trainer defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..training.lightning_cli import trainer_defaults_for


def stage_config_section(config: str | Path, *keys: str) -> Any:
    """The value at ``keys`` of a stage YAML, e.g. ``("data", "init_args", "batch_size")``."""
    with open(config) as stream:
        value = yaml.safe_load(stream)
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"{config} has no {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def trainer_setting(config: str | Path, key: str, default: Any = None) -> Any:
    """``trainer.<key>`` as a run of ``config`` gets it: the stage config's own value, else the shared
    ``_trainer.yaml``'s (:func:`t2i_lightning.training.lightning_cli.trainer_defaults_for`), else ``default``
    (pass the ``Trainer``'s own default)."""
    for source in (config, trainer_defaults_for(config)):
        if source is None:
            continue
        try:
            return stage_config_section(source, "trainer", key)
        except KeyError:
            pass
    return default
