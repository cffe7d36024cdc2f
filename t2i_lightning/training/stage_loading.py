"""Loading a stage from its checkpoint: which stage wrote it (from its hyperparameters alone), its integrity,
its weights (never pickled code), frozen for inference. Every layer above training/ loads stages through here
(the pipeline, the latent route's autoencoder users), with errors that name the path and the make target.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch

from ..registry import made_by, missing_checkpoint_message
from ..registry import stage as registry_stage
from ..registry import stage_class as registry_class
from .checkpoint_io import error_summary, read_checkpoint, stage_name, verify_integrity
from .checkpoint_upgrade import is_legacy, legacy_message


def require_checkpoint(path: str, stage: str) -> None:
    """Fail with the path and the make target that produces it (from the registry) when the named
    stage's checkpoint is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_checkpoint_message(path, stage))


def checkpoint_hparams(path: str, stage: str) -> dict:
    """The hyperparameters a stage checkpoint saved (memory-mapped: its weights are not read); a file that
    is not a checkpoint is refused naming it."""
    require_checkpoint(path, stage)
    try:
        checkpoint = read_checkpoint(path)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path} is not a readable checkpoint ({error_summary(error)})") from error
    return checkpoint.get("hyper_parameters") or {}


def load_frozen_stage(path: str, stage: str, *others: str, device: torch.device | str = "cpu") -> pl.LightningModule:
    """A stage from its checkpoint (EMA weights where it has them), frozen for inference on ``device``. ``stage`` is its
    name in the registry; the checkpoint must be that stage's (or one of ``others``'), as the registry
    tells them apart (class path and, for a diffusion stage, conditioning), else the error names whose it is."""
    written_by = checkpoint_stage(path, stage, *others)
    verify_integrity(read_checkpoint(path), path)
    loaded = registry_class(written_by).load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return loaded.eval().requires_grad_(False).to(device)


def checkpoint_stage(path: str, stage: str, *others: str) -> str:
    """Which of ``stage`` and ``others`` wrote the checkpoint at ``path`` (from its hyperparameters alone,
    no weights loaded); an error naming the stage that did write it otherwise."""
    hparams = checkpoint_hparams(path, stage)
    written_by = next((name for name in (stage, *others) if registry_stage(name).made(hparams)), None)
    if written_by is None and is_legacy(hparams):
        raise ValueError(legacy_message(path))
    if written_by is None:
        found = made_by(hparams)
        found = f"the {found} stage" if found else stage_name(hparams)
        raise ValueError(
            f"{path} is not a checkpoint of the {stage} stage" + (f" but of {found}" if found else "")
            + f" (`make {registry_stage(stage).make_target}` writes one)"
        )
    return written_by
