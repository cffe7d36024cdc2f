"""The training plumbing every generative stage shares (t2i_lightning.training.stage_training): the weights' EMA
and the gradient norm that is both logged and clipped by, on a tiny regressor through a real Trainer."""

from __future__ import annotations

import csv
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from t2i_lightning.training.ema import FusedEMA
from t2i_lightning.training.stage_training import StageTraining

from .tiny_modules import MeanColourRegressor


class TinyStage(StageTraining, MeanColourRegressor):
    def __init__(self, ema_decay: float = 0.5, ema_start_step: int = 2):
        super().__init__(channels=4, lr=0.05)
        self.save_hyperparameters()
        self.hparams.update(weight_decay=0.0, warmup_steps=0, lr_decay="linear")
        self.samples = None


class WeightsAndNorms(pl.Callback):
    """The raw weights after each optimizer step and the gradient norm before each (before clipping)."""

    def __init__(self):
        self.weights, self.norms = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in pl_module.parameters()])))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append([p.detach().clone() for p in pl_module.parameters()])


def fit(stage: TinyStage, tmp_path, steps: int, **trainer_args) -> WeightsAndNorms:
    generator = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(4, 3, 8, 8, generator=generator)} for _ in range(steps)]
    recorder = WeightsAndNorms()
    trainer = pl.Trainer(
        max_steps=steps, logger=CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder], **trainer_args,
    )  # fmt: skip
    trainer.fit(stage, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return recorder


def test_the_ema_starts_at_its_step_with_a_copy_and_then_averages_with_the_decay(tmp_path):
    stage = TinyStage(ema_decay=0.5, ema_start_step=2)
    recorder = fit(stage, tmp_path, steps=6)
    expected = recorder.weights[2]  # step index 2 is the first average: a copy of those weights
    for weights in recorder.weights[3:]:
        expected = [0.5 * e + 0.5 * w for e, w in zip(expected, weights, strict=True)]
    final = list(stage.parameters())  # at the end of fit the average replaces the raw weights
    assert not torch.allclose(final[0], recorder.weights[-1][0])
    for got, want in zip(final, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_the_logged_gradient_norm_is_the_norm_before_clipping(tmp_path):
    stage = TinyStage()
    recorder = fit(stage, tmp_path, steps=4, gradient_clip_val=1e-4)
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        logged = [float(row["train/grad_norm"]) for row in csv.DictReader(f) if row.get("train/grad_norm")]
    assert logged == pytest.approx(recorder.norms, rel=1e-5)
    assert min(logged) > 1e-3  # far above the clip value: the log is not of the clipped gradients


def test_clipping_scales_the_gradients_to_the_clip_norm_and_keeps_their_direction():
    stage = TinyStage()
    optimizer = torch.optim.SGD(stage.parameters(), lr=1.0)
    for p in stage.parameters():
        p.grad = torch.ones_like(p)
    before = [p.grad.clone() for p in stage.parameters()]
    norm = math.sqrt(sum(p.numel() for p in stage.parameters()))
    stage.configure_gradient_clipping(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    assert float(torch.nn.utils.get_total_norm([p.grad for p in stage.parameters()])) == pytest.approx(0.5, rel=1e-4)
    for p, g in zip(stage.parameters(), before, strict=True):
        torch.testing.assert_close(p.grad, g * 0.5 / norm, rtol=1e-4, atol=0)
    stage.configure_gradient_clipping(optimizer, gradient_clip_val=None)  # no clip value: left alone
    assert float(torch.nn.utils.get_total_norm([p.grad for p in stage.parameters()])) == pytest.approx(0.5, rel=1e-4)


def test_the_ema_refuses_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="decay"):
        FusedEMA(decay=1.0)
