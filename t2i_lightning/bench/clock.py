"""Reading the clock around work that may run asynchronously on an accelerator."""

from __future__ import annotations

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (an accelerator runs asynchronously; the CPU needs nothing),
    so that a clock read after it counts that work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
