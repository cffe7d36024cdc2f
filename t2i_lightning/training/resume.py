"""Resuming a killed ``t2i fit`` / ``make train-*`` from its newest good checkpoint, or refusing to.

Running the same command again after a kill (or a preemption) finds the run's checkpoint
directory, picks the newest checkpoint that loads (``last.ckpt`` first), and resumes from it,
with global step, optimizer, learning-rate schedule and EMA state restored by Lightning. It
refuses, with the reason, a checkpoint written by another stage class or with other model
hyperparameters unless ``--resume-changed-config`` is given; ``--fresh`` starts over and moves
the old checkpoints aside (nothing is deleted).
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import import_class
from .checkpoint_io import error_summary, read_checkpoint, verify_integrity
from .checkpoint_upgrade import is_legacy, legacy_message


class ResumeError(ValueError):
    """A checkpoint exists in the run directory but may not be resumed without an explicit flag."""


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    global_step: int
    skipped: tuple[str, ...]  # newer checkpoints that did not load, with the reason


def _plain(value: Any) -> Any:
    """Hyperparameters as plain JSON-able values (jsonargparse Namespaces become dicts)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def init_defaults(class_path: str | None) -> dict[str, Any]:
    """The default of each ``__init__`` argument of the class at ``class_path`` ({} when it cannot be imported)."""
    try:
        parameters = inspect.signature(import_class(class_path or "")).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}
    return {key: _plain(p.default) for key, p in parameters.items() if p.default is not inspect.Parameter.empty}


def changed_hyperparameters(saved: dict, current: dict, class_path: str | None = None) -> list[str]:
    """Dotted names of the hyperparameters that differ between a checkpoint and the current config.

    An argument the checkpoint lacks is no change when the config leaves it at the class's default (of
    ``class_path`` at the top, of each nested ``class_path`` under its ``init_args``): an option added after
    the checkpoint was written, left off, trains as the code that wrote it did."""
    saved, current = _plain(saved), _plain(current)

    def walk(a: Any, b: Any, prefix: str, defaults: dict[str, Any]) -> list[str]:
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return [] if _same(a, b) else [prefix.rstrip(".")]
        names = []
        for key in sorted(set(a) | set(b)):
            if key not in a and key in defaults and _same(b[key], defaults[key]):
                continue
            inner = init_defaults(b.get("class_path")) if key == "init_args" else {}
            names += walk(a.get(key), b.get(key), f"{prefix}{key}.", inner)
        return names

    return walk(saved, current, "", init_defaults(class_path))


def check_explicit_checkpoint(path: str | Path, class_path: str) -> None:
    """Refuse a ``--ckpt_path`` file that another stage class wrote than the one the config trains:
    LightningCLI would otherwise replace the config's model with the checkpoint's."""
    try:
        saved = read_checkpoint(path).get("hyper_parameters", {})
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise ResumeError(f"--ckpt_path {path} is not a readable checkpoint ({error_summary(error)})") from error
    if is_legacy(saved):
        raise ResumeError(legacy_message(str(path)))
    saved_class = saved.get("_class_path")
    if saved_class and saved_class != class_path:
        raise ResumeError(f"--ckpt_path {path} was written by {saved_class}, but this config trains {class_path}")


def _candidates(directory: Path, last_name: str) -> tuple[list[tuple[Path, dict]], list[str]]:
    """The readable checkpoints of a run directory (memory-mapped), the furthest trained first (on a tie the
    ``last`` one, then the newest file), and why the unreadable ones were passed over. ``last.ckpt`` is not
    always the furthest: a run killed between its periodic save and ``last.ckpt``'s leaves it behind."""
    readable, skipped = [], []
    for path in sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            checkpoint = read_checkpoint(path)
            int(checkpoint["global_step"])
        except Exception as error:  # any unreadable file is skipped, and said so
            skipped.append(f"{path.name}: {error_summary(error)}")
            continue
        readable.append((path, checkpoint))
    readable.sort(key=lambda item: (-int(item[1]["global_step"]), item[0].name != last_name))
    return readable, skipped


def find_resume_point(
    directory: str | Path,
    class_path: str,
    hyperparameters: dict,
    *,
    allow_changed_config: bool = False,
    last_name: str = "last.ckpt",
) -> ResumePoint | None:
    """The checkpoint to resume from in ``directory``, or None when there is none.

    The furthest trained checkpoint that can be read and is whole is taken; those that cannot be read
    (truncated, not a Lightning checkpoint) or fail their tensor digest are passed over and reported in
    ``skipped``. The one taken must be of ``class_path`` and (unless ``allow_changed_config``) have the
    same model hyperparameters, else :class:`ResumeError`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates, skipped = _candidates(directory, last_name)
    for path, checkpoint in candidates:
        try:
            verify_integrity(checkpoint, path.name)
        except Exception as error:  # a damaged file is passed over too, and said so
            skipped.append(f"{path.name}: {error_summary(error)}")
            continue
        saved_hparams, step = checkpoint.get("hyper_parameters", {}), int(checkpoint["global_step"])
        saved_class = saved_hparams.get("_class_path")
        hint = "pass --fresh to start over (the old checkpoints are moved aside)"
        if is_legacy(saved_hparams):
            raise ResumeError(legacy_message(str(path)))
        if saved_class and saved_class != class_path:
            raise ResumeError(
                f"{path} was written by {saved_class}, but this config trains {class_path}; {hint}"
            )
        changed = changed_hyperparameters(saved_hparams, hyperparameters, class_path)
        if changed and not allow_changed_config:
            raise ResumeError(
                f"{path} (step {step}) was trained with other model settings: {', '.join(changed)}; "
                f"{hint}, or --resume-changed-config to resume with the new settings"
            )
        return ResumePoint(path, step, tuple(skipped))
    if skipped:
        raise ResumeError(
            f"No checkpoint in {directory} can be read ({'; '.join(skipped)}); pass --fresh to start over"
        )
    return None


def move_aside(directory: str | Path) -> Path | None:
    """Rename a run's checkpoint directory to ``<name>.replaced-<time>`` (for ``--fresh``); its new name."""
    directory = Path(directory)
    if not directory.is_dir() or not any(directory.glob("*.ckpt")):
        return None
    target = directory.with_name(f"{directory.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    directory.rename(target)
    return target


def checkpoint_directory(trainer: Any) -> Path:
    """The directory a trainer's ModelCheckpoint writes to (``runs/<stage>/checkpoints``), known
    before ``fit`` resolves it: its ``dirpath`` if set, else ``<save_dir>/<name>/<version>/checkpoints``
    of the first logger, as Lightning resolves it."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath:
        return Path(callback.dirpath)
    if trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version / "checkpoints"
    return Path(trainer.default_root_dir) / "checkpoints"
