"""Exponential moving average of the weights, updated with one fused pass over all tensors.

Lightning's ``EMAWeightAveraging`` hands ``AveragedModel`` a per-tensor ``avg_fn``, so each update is
a Python loop of several small ops per tensor: 12.5-15 ms a step on one core for the demo decoder's
221 tensors. :class:`FusedEMA` gives it torch's ``get_ema_multi_avg_fn`` instead, one
``torch._foreach_lerp_`` per device and dtype (4-5.7 ms), the same average
(θ_ema ← d·θ_ema + (1 − d)·θ; the first update copies θ). Everything else (weights swapped in for
validation, the average saved as the checkpoint's ``state_dict`` and the raw weights as
``current_model_state``, resuming) is Lightning's ``WeightAveraging``.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class FusedEMA(WeightAveraging):
    """Args:
    decay: d above (0 < d < 1).
    start_step: the first optimizer step (0-based) whose weights enter the average; None: from the first.
    """

    def __init__(self, decay: float = 0.999, start_step: int | None = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.start_step = start_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and (self.start_step is None or step_idx >= self.start_step)
