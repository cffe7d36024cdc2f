"""Decoder training throughput: Lightning against a bare PyTorch loop on the same model and batches.

Both train the demo decoder (a stage config's U-Net, random initial weights, one copy each) on the
same in-memory batches, decoded beforehand so that loading is measured on its own
(:mod:`t2i_lightning.bench.input_pipeline`). The bare loop does what a step needs and nothing else:
the stage's loss, backward, gradient clipping at the trainer's value (``_trainer.yaml``), AdamW with the stage's
schedule and the EMA update. The Lightning run has what ``make train-decoder`` has around its steps:
logging to TensorBoard, the progress bar, the learning-rate monitor, the grad-norm log, the EMA
callback and the non-finite-loss guard. Their time ratio is what Lightning costs.

Both run on ``device`` (the CPU by default; a GPU for :mod:`t2i_lightning.bench.gpu`), moving each
batch to it inside the timed loop as Lightning does, and wait for the device before reading the clock.
"""

from __future__ import annotations

import copy
import tempfile
import time

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..stages.diffusion import DiffusionStage
from ..training.finite_guard import NonFiniteGuard
from ..training.optim import adamw_with_warmup, decay_groups
from .clock import synchronize
from .sampling import decoder_for_bench
from .stage_config import stage_config_section, trainer_setting


def random_batches(stage: DiffusionStage, count: int, batch_size: int, seed: int = 0) -> list[dict]:
    """``count`` decoder batches of random images in [-1, 1] and random embeddings (the step's cost does
    not depend on the values)."""
    generator = torch.Generator().manual_seed(seed)
    size, dim = stage.net.image_size, stage.net.cond_dim
    return [
        {
            "image": torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1,
            "img_emb": torch.randn(batch_size, dim, generator=generator),
            "key": [f"{i:06d}-{j:03d}" for j in range(batch_size)],
        }
        for i in range(count)
    ]


def bare_loop_seconds(
    stage: DiffusionStage, batches: list[dict], warmup: int, gradient_clip: float | None, bf16: bool = False,
    device: torch.device | str = "cpu",
) -> float:  # fmt: skip
    """Seconds for the steps after the first ``warmup`` of a plain PyTorch training loop over ``batches``
    on ``device``, gradients clipped to norm ``gradient_clip`` (None: not clipped); ``bf16``: forward and
    loss under bfloat16 autocast (what ``--trainer.precision bf16-mixed`` does)."""
    device = torch.device(device)
    stage.to(device)
    hp = stage.hparams
    optim = adamw_with_warmup(
        decay_groups(stage.optimizer_parameters(), hp.weight_decay), hp.lr, hp.weight_decay, hp.warmup_steps, len(batches),
        betas=stage.adam_betas, decay=hp.lr_decay,
    )  # fmt: skip
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    ema = AveragedModel(stage, multi_avg_fn=get_ema_multi_avg_fn(hp.ema_decay), use_buffers=True)
    stage.train()
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        batch = move_data_to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = stage._losses(batch, stage.conditioning.drop_prob)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if gradient_clip is not None:
            torch.nn.utils.clip_grad_norm_(stage.parameters(), gradient_clip)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(stage)
    synchronize(device)
    return time.perf_counter() - start


class _StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        synchronize(pl_module.device)
        self.end = time.perf_counter()


def lightning_seconds(
    stage: DiffusionStage, batches: list[dict], warmup: int, gradient_clip: float | None,
    device: torch.device | str = "cpu", precision: str = "32-true",
) -> float:  # fmt: skip
    """Seconds for the steps after the first ``warmup`` of ``Trainer.fit`` over ``batches`` on ``device``
    (one device of its type) at ``precision``."""
    timer = _StepTimer(warmup)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            accelerator=torch.device(device).type, devices=1, precision=precision, max_steps=len(batches),
            gradient_clip_val=gradient_clip,
            logger=TensorBoardLogger(logs, name="bench"), enable_checkpointing=False, limit_val_batches=0,
            num_sanity_val_steps=0, log_every_n_steps=10, enable_model_summary=False,
            callbacks=[timer, TQDMProgressBar(refresh_rate=10), LearningRateMonitor("step"), NonFiniteGuard()],
        )  # fmt: skip
        trainer.fit(stage, train_dataloaders=loader)
    return timer.end - timer.start


def bench_training(
    config: str = "stages/decoder.yaml", steps: int = 30, warmup: int = 5, batch_size: int | None = None
) -> dict:
    """Images/s of decoder training through Lightning and through the bare loop, and their ratio; and the
    bare loop under bfloat16 autocast against float32 (the speed-up ``bf16-mixed`` offers on this CPU).

    The bare loop runs before and after Lightning (on fresh copies of the same initial weights) and
    its faster run counts, so warm-up effects cannot flatter Lightning.
    """
    stage = decoder_for_bench(None, config)
    batch_size = batch_size or config_batch_size(config)
    clip = trainer_setting(config, "gradient_clip_val")
    batches = random_batches(stage, steps, batch_size)
    bare = bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip)
    lightning = lightning_seconds(copy.deepcopy(stage), batches, warmup, clip)
    bare = min(bare, bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip))
    bf16 = bare_loop_seconds(copy.deepcopy(stage), batches, warmup, clip, bf16=True)
    images = (steps - warmup) * batch_size
    return {
        "config": config,
        "batch_size": batch_size,
        "image_size": stage.net.image_size,
        "steps_timed": steps - warmup,
        "lightning_img_per_s": images / lightning,
        "bare_img_per_s": images / bare,
        "ratio": lightning / bare,
        "bf16_img_per_s": images / bf16,
        "bf16_speedup": bare / bf16,
        "threads": torch.get_num_threads(),
    }


def config_batch_size(config: str) -> int:
    return int(stage_config_section(config, "data", "init_args", "batch_size"))
