"""``t2i upgrade-checkpoint``: convert decoder, text-decoder and upsampler checkpoints written before the
diffusion stages became one DiffusionStage, in place, keeping the original beside it.

    t2i upgrade-checkpoint runs/decoder/checkpoints/*.ckpt

Each file is rewritten atomically (a reader sees the old file or the new one, never a part); the
original is kept as ``<name>.pre-diffusion-stage`` unless ``--no-backup``. Weights, EMA, optimizer state
and progress carry over, so sampling and resuming go on as before
(:mod:`t2i_lightning.training.checkpoint_upgrade`). A checkpoint already in the new layout is left alone.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from .options import add_command, options_from

BACKUP_SUFFIX = ".pre-diffusion-stage"


@dataclass(frozen=True, kw_only=True)
class UpgradeOptions:
    checkpoints: list[str]
    no_backup: bool


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "upgrade-checkpoint", __doc__,
                         help="convert old decoder/text-decoder/upsampler checkpoints to the one DiffusionStage")  # fmt: skip
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files")
    parser.add_argument("--no-backup", action="store_true", help=f"do not keep the original as <name>{BACKUP_SUFFIX}")
    parser.set_defaults(run=lambda args: run(options_from(UpgradeOptions, args)))


def upgrade_file(path: Path, backup: bool) -> str:
    """Upgrade one checkpoint file in place; what was done, in a few words."""
    import torch

    from ..data.shards import atomic_path
    from ..training.checkpoint_io import INTEGRITY_KEY, AtomicCheckpointIO, error_summary, verify_integrity
    from ..training.checkpoint_upgrade import DIFFUSION_STAGE, is_legacy, upgrade

    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path} is not a readable checkpoint ({error_summary(error)})") from error
    verify_integrity(checkpoint, path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if not is_legacy(hparams):
        state = "already a DiffusionStage checkpoint" if hparams.get("_class_path") == DIFFUSION_STAGE else "not a diffusion checkpoint"
        return f"left alone ({state})"
    old_class = hparams["_class_path"].rpartition(".")[2]
    upgraded = {k: v for k, v in upgrade(checkpoint).items() if k != INTEGRITY_KEY}
    if backup:
        with atomic_path(path.with_name(path.name + BACKUP_SUFFIX)) as partial:
            shutil.copyfile(path, partial)
    AtomicCheckpointIO().save_checkpoint(upgraded, path)  # atomic, with the digest of the moved tensors
    return f"{old_class} -> DiffusionStage ({upgraded['hyper_parameters']['conditioning']['class_path'].rpartition('.')[2]})"


def run(options: UpgradeOptions) -> None:
    for name in options.checkpoints:
        print(f"{name}: {upgrade_file(Path(name), backup=not options.no_backup)}")
