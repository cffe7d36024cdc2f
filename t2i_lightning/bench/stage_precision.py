"""A stage's training step through Lightning in float32 against ``bf16-mixed``: what the Makefile's
``*_PRECISION`` (bf16-mixed on CPUs that compute bf16 natively) buys each stage that `make` fits.

The stage and its DataModule are built from the stage config as ``t2i fit --config`` builds them (the
shared ``_trainer.yaml`` first), reading ``data``; ``steps`` batches are read once and kept in memory,
so loading is not timed. Fresh copies of the same initial weights then train on those batches through
``Trainer.fit`` with what a real run has around its steps (the stage's own callbacks, such as EMA, plus
logging, progress bar, learning-rate monitor and the non-finite guard:
:func:`t2i_lightning.bench.training.lightning_seconds`), in float32, in bf16-mixed, and in float32 again;
the faster float32 run counts, so warm-up cannot flatter bf16.
"""

from __future__ import annotations

import copy
import itertools

from ..training.lightning_cli import T2ILightningCLI
from .stage_config import trainer_setting
from .training import lightning_seconds


def stage_and_batches(config: str, data: str, steps: int, batch_size: int | None = None):
    """The stage ``config`` builds (random initial weights) and its first ``steps`` training batches of ``data``."""
    args = ["--config", config, "--trainer.logger", "false",
            "--data.init_args.train", data, "--data.init_args.val", data, "--data.init_args.num_workers", "0",
            *(["--data.init_args.batch_size", str(batch_size)] if batch_size else [])]  # fmt: skip
    try:
        cli = T2ILightningCLI(args=args, run=False)
    except SystemExit as exit_:  # jsonargparse has printed why; the bench reports the row as failed
        raise ValueError(f"{config} does not parse as a stage config (exit status {exit_.code})") from exit_
    cli.datamodule.setup("fit")
    batches = list(itertools.islice(iter(cli.datamodule.train_dataloader()), steps))
    if len(batches) < steps:
        raise ValueError(f"{data} gave {len(batches)} training batches for {config}; the bench needs {steps}")
    return cli.model, batches


def bench_stage_precision(config: str, data: str, steps: int = 10, warmup: int = 3, batch_size: int | None = None) -> dict:
    """Images/s of ``config``'s training step through Lightning in float32 and in bf16-mixed, and the speed-up."""
    stage, batches = stage_and_batches(config, data, steps, batch_size)
    clip = trainer_setting(config, "gradient_clip_val")

    def seconds(precision: str) -> float:
        return lightning_seconds(copy.deepcopy(stage), batches, warmup, clip, precision=precision)

    float32 = seconds("32-true")
    bf16 = seconds("bf16-mixed")
    float32 = min(float32, seconds("32-true"))
    images = (steps - warmup) * len(batches[0]["image"])
    return {
        "config": config,
        "stage": type(stage).__name__,
        "batch_size": len(batches[0]["image"]),
        "steps_timed": steps - warmup,
        "float32_img_per_s": images / float32,
        "bf16_img_per_s": images / bf16,
        "bf16_speedup": float32 / bf16,
    }
