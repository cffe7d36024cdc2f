"""Checkpoint files: written atomically, read as data only.

Saving: a temporary file in the same directory, fsynced, then renamed.

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file
lives in the system temp directory; when that is another filesystem than ``runs/`` the final
move is a copy, and a kill during it leaves a truncated ``last.ckpt`` under its final name.
Here the temporary file sits beside the target (:func:`~t2i_lightning.data.shards.atomic_path`),
so the rename stays on one filesystem: a reader sees either the previous complete checkpoint or
the new complete one, never a part.

Integrity: a checkpoint saved here records the sha256 of its tensors (:func:`tensor_digest`); loading it
(resume, ``--ckpt_path``, the pipeline's loaders) checks it, so bits flipped on disk are refused, and
resuming passes over such a file to the newest good one, instead of training on from damaged weights.

Loading: every checkpoint read, by the project or by Lightning through :class:`AtomicCheckpointIO`,
uses ``torch.load(weights_only=True)``: tensors and plain containers, never pickled code. What a
stage checkpoint is still trusted with is its ``hyper_parameters``: ``load_from_checkpoint`` (and
LightningCLI's ``--ckpt_path``) rebuild the stage and its networks from the ``class_path`` and
``init_args`` recorded there, and Lightning only builds a class that is already imported and is a
subclass of the stage class asked for.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..data.shards import atomic_path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents as data (``weights_only=True``), memory-mapped: tensors are read when used."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a PyTorch checkpoint archive")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


INTEGRITY_KEY = "t2i_tensor_sha256"
"""The key under which a checkpoint written here records the digest of its tensors."""


class CorruptCheckpointError(ValueError):
    """A checkpoint whose tensors are not the ones it was written with."""


def tensor_digest(checkpoint: dict[str, Any]) -> str:
    """sha256 over every tensor of a checkpoint: its key path, dtype, shape and bytes, in the checkpoint's
    order (weights, EMA weights, optimizer state...); the integrity record itself is left out. Values that
    are not tensors are pickled metadata, which a damaged file rarely still unpickles."""
    sha = hashlib.sha256()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            sha.update(f"{path}:{tensor.dtype}:{tuple(value.shape)};".encode())
            sha.update(tensor.view(torch.uint8).numpy())
        elif isinstance(value, dict):
            for key, item in value.items():
                if path or key != INTEGRITY_KEY:
                    walk(item, f"{path}/{key}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{path}/{i}")

    walk(checkpoint, "")
    return sha.hexdigest()


def verify_integrity(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose tensors differ from the digest written with them (bits flipped on disk or
    in a copy); one written without a digest (by another tool, or before there was one) is taken as it is."""
    recorded = checkpoint.get(INTEGRITY_KEY) if isinstance(checkpoint, dict) else None
    if recorded and tensor_digest(checkpoint) != recorded:
        raise CorruptCheckpointError(
            f"{path} is corrupt: its tensors do not match the digest saved with them (damaged on disk or in a copy)"
        )


def error_summary(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 120 characters) of why a checkpoint did not load."""
    lines = str(error).splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:120]}"


def stage_name(hparams: dict) -> str | None:
    """The stage class a checkpoint was written by, as the CLI recorded it (``DiffusionStage``), or None."""
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return class_path.rpartition(".")[2] if isinstance(class_path, str) else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic and whose loads are ``weights_only`` unless asked otherwise
    (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        checkpoint = {**checkpoint, INTEGRITY_KEY: tensor_digest(checkpoint)}
        with atomic_path(path) as partial, open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
        verify_integrity(checkpoint, path)
        return checkpoint
