"""CLIP training step under bfloat16 autocast against float32: the speed-up ``--trainer.precision
bf16-mixed`` gives the CLIP stage (the demo's longest training after the decoder's was made bf16).

Both runs train fresh copies of the same randomly initialised :class:`CLIPStage` on the same
in-memory batches (random images, shapes-like captions: the step's cost does not depend on the
values) with AdamW: the stage's loss (contrastive plus caption words), backward, step. The float32
loop runs before and after the bf16 one and its faster run counts.
"""

from __future__ import annotations

import copy
import time

import torch

from ..stages.clip import CLIPStage
from .stage_config import stage_config_section

CAPTIONS = ("a small red circle to the left of a large blue square on a yellow background",
            "two green triangles", "a purple star above an orange ring on a white background")  # fmt: skip


def _bare_clip_seconds(stage: CLIPStage, batches: list[dict], warmup: int, bf16: bool) -> float:
    """Seconds for the steps after the first ``warmup`` of a plain loop over ``batches``."""
    optimizer = torch.optim.AdamW(stage.parameters(), lr=stage.hparams.lr, weight_decay=stage.hparams.weight_decay)
    stage.train()
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = stage.total_loss(stage._features(batch)[2])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def bench_clip_training(
    model_name: str, config: str = "stages/clip.yaml", steps: int = 12, warmup: int = 3, batch_size: int | None = None
) -> dict:
    """Images/s of the CLIP stage's training step (``config``'s batch and word-loss weight, ``model_name``'s
    towers) in float32 and under bfloat16 autocast, and their ratio."""
    init = stage_config_section(config, "model", "init_args")
    batch_size = batch_size or int(stage_config_section(config, "data", "init_args", "batch_size"))
    torch.manual_seed(0)
    stage = CLIPStage(model_name, lr=init["lr"], weight_decay=init["weight_decay"],
                      word_loss_weight=init.get("word_loss_weight", 0.0))  # fmt: skip
    size = stage.clip.visual.image_size
    size = size if isinstance(size, int) else size[0]
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch_size)]
    generator = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(batch_size, 3, size, size, generator=generator), "caption": captions}
               for _ in range(steps)]  # fmt: skip
    float32 = _bare_clip_seconds(copy.deepcopy(stage), batches, warmup, bf16=False)
    bf16 = _bare_clip_seconds(copy.deepcopy(stage), batches, warmup, bf16=True)
    float32 = min(float32, _bare_clip_seconds(copy.deepcopy(stage), batches, warmup, bf16=False))
    images = (steps - warmup) * batch_size
    return {
        "model": model_name,
        "batch_size": batch_size,
        "image_size": size,
        "steps_timed": steps - warmup,
        "float32_img_per_s": images / float32,
        "bf16_img_per_s": images / bf16,
        "bf16_speedup": float32 / bf16,
    }
