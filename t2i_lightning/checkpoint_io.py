"""Checkpoint files written atomically: a temporary file in the same directory, fsynced, then renamed.

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file
lives in the system temp directory; when that is another filesystem than ``runs/`` the final
move is a copy, and a kill during it leaves a truncated ``last.ckpt`` under its final name.
Here the temporary file sits beside the target (:func:`~t2i_lightning.data.shards.atomic_path`),
so the rename stays on one filesystem: a reader sees either the previous complete checkpoint or
the new complete one, never a part.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .data.shards import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic (see the module docstring); loading is Lightning's."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        with atomic_path(path) as partial, open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
