"""The captioner-guided score model: the score and captioner stages through the real CLI (micro networks
on 32px shapes), the captioner's conditioning on the image, guided sampling (λ = 0 is exactly the
unguided sampler), `t2i sample --method score`, `t2i evaluate-guidance`, and the colour check."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from t2i_lightning.data.shapes.scene import COLOURS
from t2i_lightning.metrics.captions import caption_is_exact
from t2i_lightning.metrics.colour import dominant_object_colour
from t2i_lightning.nn.captioner import NoisyCaptioner
from t2i_lightning.nn.score_unet import ScoreUNet
from t2i_lightning.stages.captioner import CaptionerStage
from t2i_lightning.stages.score import ScoreStage

from .cli_runs import T2I, make_dry_run, run, scalars

MICRO_CAPTIONER = dict(channels=(16, 32), width=32, layers=1, heads=2, groups=8)

def test_score_fit_writes_an_ema_checkpoint_dsm_curves_and_grids(score_runs):
    checkpoint = torch.load(score_runs["score"], map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 8 and "averaging_state" in checkpoint
    name = "net.unet.conv_in.weight"
    assert not torch.equal(checkpoint["state_dict"][name], checkpoint["current_model_state"][name])
    logged = scalars(score_runs["runs"] / "score")
    assert {"train/dsm", "val/dsm", "train/grad_norm"} <= logged.keys()
    assert all(math.isfinite(v) for tag in ("train/dsm", "val/dsm") for v in logged[tag])
    assert_float32_weights(checkpoint)
    grids = sorted((score_runs["runs"] / "score" / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000004.png", "step-0000008.png"]


def test_captioner_fit_logs_accuracy_and_exact_match_per_level_and_a_caption_grid(score_runs):
    logged = scalars(score_runs["runs"] / "captioner")
    for level in ("sigma0", "sigma0.155", "sigma2"):  # σ = 0, the middle and the top of 2 ... 0.02 (10 levels)
        for metric in ("loss", "token_acc", "exact"):
            assert f"val/{metric}_{level}" in logged, (metric, level)
    assert logged["train/loss"][-1] < logged["train/loss"][0]
    assert all(math.isfinite(v) for tag in ("train/loss", "val/loss_sigma0") for v in logged[tag])
    assert_float32_weights(torch.load(score_runs["captioner"], map_location="cpu", weights_only=False))
    assert sorted(p.name for p in (score_runs["runs"] / "captioner" / "samples").glob("*.png")) == [
        "step-0000004.png", "step-0000008.png"]  # fmt: skip


def assert_float32_weights(checkpoint: dict) -> None:
    """bf16-mixed (the fixture's precision) autocasts the passes only: every saved weight stays float32."""
    for state in ("state_dict", "current_model_state"):
        assert all(w.dtype == torch.float32 for w in checkpoint.get(state, {}).values() if w.is_floating_point())


def test_make_trains_the_score_model_and_captioner_at_their_precisions():
    def precisions(*variables):
        out = make_dry_run("train-score", "train-captioner", "RUNS=/nonexistent", "DATA=/nonexistent", *variables)
        fits = [line for line in out if re.search(r" fit --config stages/(score|captioner).yaml", line)]
        return [re.search(r"--trainer.precision (\S+)", line).group(1) for line in fits]

    assert precisions("PRECISION=bf16-mixed") == ["bf16-mixed", "bf16-mixed"]
    assert precisions("PRECISION=32-true") == ["32-true", "32-true"]
    assert precisions() == ["auto", "auto"]  # decided in Python from the accelerator used (test_architecture.py)


def test_the_captioner_learns_to_read_the_image():
    """A tiny fit on single-colour images: held-out images (other shades, other noise) then give their own
    caption a higher log-likelihood than another colour's, at σ = 0 and through moderate noise."""
    torch.manual_seed(0)
    stage = CaptionerStage(NoisyCaptioner(image_size=16, **MICRO_CAPTIONER), sigma_max=0.5, num_levels=3)
    names = ["red", "blue", "green", "yellow"]

    def images(shade: float, n: int) -> torch.Tensor:
        rgb = torch.tensor([COLOURS[c] for c in names], dtype=torch.float32) / 127.5 - 1
        out = (rgb * shade)[:, :, None, None].expand(-1, -1, 16, 16).repeat(n, 1, 1, 1)
        return (out + 0.05 * torch.randn_like(out)).clamp(-1, 1)

    captions = [f"a {c} square" for c in names]
    optimizer = torch.optim.AdamW(stage.parameters(), lr=3e-3)
    for _ in range(60):
        x = images(1.0, 4)
        sigma = stage.sigmas[torch.randint(0, len(stage.sigmas), (len(x),))]
        loss = stage._token_stats(x + sigma[:, None, None, None] * torch.randn_like(x), sigma, captions * 4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out = images(0.9, 1)
    wrong = captions[1:] + captions[:1]
    for sigma in (0.0, 0.2):
        level = torch.full((4,), sigma)
        noisy = held_out + sigma * torch.randn_like(held_out)
        with torch.no_grad():
            true = stage.net.log_likelihood(noisy, level, stage.net.tokenize(captions))
            other = stage.net.log_likelihood(noisy, level, stage.net.tokenize(wrong))
        assert (true > other).all(), (sigma, true, other)


def test_guidance_gradient_has_the_image_shape_and_lambda_zero_is_the_unguided_sampler(score_runs):
    score = ScoreStage.load_from_checkpoint(score_runs["score"], map_location="cpu", weights_only=False).eval()
    captioner = CaptionerStage.load_from_checkpoint(score_runs["captioner"], map_location="cpu", weights_only=False)
    net = captioner.eval().net
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    token_ids = net.tokenize(["a red circle"] * 2)
    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net.log_likelihood(x_in, torch.full((2,), 0.3), token_ids).sum(), x_in)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0

    def sample(**guidance):
        return score.sample(2, steps_per_level=2, progress=False, generator=torch.Generator().manual_seed(0), **guidance)

    unguided = sample()
    assert torch.equal(sample(captioner=net, prompt="a red circle", guidance=0.0), unguided)
    assert not torch.equal(sample(captioner=net, prompt="a red circle", guidance=50.0), unguided)
    with pytest.raises(ValueError, match="captioner and a non-empty prompt"):
        sample(guidance=1.0)


def test_sample_method_score_writes_the_grid_and_prints_norms_per_level(score_runs, tmp_path):
    out = tmp_path / "guided.png"
    result = run(T2I, "sample", "--method", "score", "--prompt", "a red circle", "--guidance", "2", "--n", "3",
                 "--score", str(score_runs["score"]), "--captioner", str(score_runs["captioner"]),
                 "--langevin-steps", "2", "--out", str(out))  # fmt: skip
    assert "3 images of 32x32, guided by the captioner (lambda 2.0)" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if len(line.split()) == 3 and line.strip()[0].isdigit()]
    assert len(rows) == 10 and float(rows[0][0]) == pytest.approx(2.0)  # one row per level, from sigma_max
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (3 * 32, 32)
    unguided = run(T2I, "sample", "--method", "score", "--prompt", "a red circle", "--guidance", "0", "--n", "2",
                   "--score", str(score_runs["score"]), "--captioner", str(tmp_path / "none.ckpt"),
                   "--langevin-steps", "2", "--out", str(tmp_path / "u.png"))  # fmt: skip
    assert "unguided" in unguided.stdout  # no captioner needed
    both = run(T2I, "sample", "--method", "score", "--prompt", "a blue square", "a red circle", "--guidance", "2", "--n", "3",
               "--score", str(score_runs["score"]), "--captioner", str(score_runs["captioner"]),
               "--langevin-steps", "2", "--out", str(tmp_path / "both.png"))  # fmt: skip
    assert "6 images of 32x32" in both.stdout and "'a red circle':" in both.stdout
    with Image.open(tmp_path / "both.png") as grid, Image.open(out) as alone:
        assert grid.size == (3 * 32, 2 * 32)  # a row per prompt; the second is the first run's (same seed)
        assert np.array_equal(np.asarray(grid)[32:], np.asarray(alone))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "a red circle", "--guidance", "-1"], "--guidance must be >= 0"),
        (["--from-image", "x.png"], "--method score takes --prompt"),
        (["--prompt", "a red circle", "--langevin-steps", "0"], "--langevin-steps must be positive"),
    ],
)
def test_sample_method_score_rejects_bad_input(score_runs, tmp_path, args, message):
    result = run(T2I, "sample", "--method", "score", *args, "--score", str(score_runs["score"]),
                 "--captioner", str(score_runs["captioner"]), "--out", str(tmp_path / "x.png"), check=False)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_a_captioner_with_other_noise_levels_is_refused(score_runs, tmp_path):
    checkpoint = torch.load(score_runs["captioner"], map_location="cpu", weights_only=False)
    checkpoint["hyper_parameters"]["num_levels"] = 5
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    result = run(T2I, "sample", "--method", "score", "--prompt", "a red circle", "--score", str(score_runs["score"]),
                 "--captioner", str(other), "--out", str(tmp_path / "x.png"), check=False)  # fmt: skip
    assert result.returncode != 0 and "other noise levels" in result.stderr


def test_evaluate_guidance_reports_the_colour_match_per_lambda(score_runs, tmp_path):
    out = tmp_path / "guidance.json"
    result = run(T2I, "evaluate-guidance", "--prompts", "a red circle", "a blue square", "--guidance", "0", "1",
                 "--n", "2", "--langevin-steps", "2", "--score", str(score_runs["score"]),
                 "--captioner", str(score_runs["captioner"]), "--out", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    assert [r["guidance"] for r in report["rows"]] == [0.0, 1.0]
    assert all(r["images"] == 4 and 0 <= r["colour_match"] <= 1 and r["s_per_image"] > 0 for r in report["rows"])
    assert "lambda" in result.stdout


def test_dominant_object_colour_reads_the_object_not_the_background():
    image = torch.tensor(COLOURS["blue"], dtype=torch.float32)[:, None, None].expand(3, 32, 32).clone()
    image[:, 10:20, 12:22] = torch.tensor(COLOURS["red"], dtype=torch.float32)[:, None, None]
    assert dominant_object_colour(image / 127.5 - 1, COLOURS) == "red"
    assert dominant_object_colour(torch.zeros(3, 32, 32), COLOURS) is None  # nothing stands out


def test_caption_exact_match_reads_the_scene_not_the_words():
    meta = {"objects": [{"kind": "circle", "colour": "red", "size": "small", "position": "centre"}],
            "relations": [], "background": {"colour": "blue"}}  # fmt: skip
    assert caption_is_exact("a small red disc, blue background", "a red circle", meta)
    assert not caption_is_exact("a red square", "a red circle", meta)
    assert not caption_is_exact("a a a a", "a red circle", meta)  # outside the grammar
    assert caption_is_exact("A dog.", "a dog", None) and not caption_is_exact("a cat", "a dog", None)


def test_score_unet_reads_the_noise_level_and_checks_its_input():
    torch.manual_seed(0)
    net = ScoreUNet(image_size=16, base_channels=16, channel_mult=(1, 2), attention_resolutions=(), head_channels=16, groups=8)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        low, high = net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([1.0, 1.0]))
    assert low.shape == x.shape and (low - high).abs().max() > 1e-3
    with pytest.raises(ValueError, match="positive"):
        net(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 3, 15, 15), torch.tensor([1.0]))


def test_captioner_vocabulary_round_trips_the_grammar_and_flags_unknown_words():
    net = NoisyCaptioner(image_size=16, **MICRO_CAPTIONER)
    captions = ["a small green triangle to the left of a big violet star, grey background", "three red discs"]
    ids = net.tokenize(captions)
    assert ids.shape == (2, 32) and int(ids.max()) < len(net.vocab) < 100
    assert net.decode_tokens(ids) == captions
    assert net.vocab.unknown_words(["a red zebra"]) == ["zebra"] and net.vocab.unknown_words(captions) == []
    mask = net.target_mask(ids)
    assert mask[1].tolist() == [False] + [True] * 4 + [False] * 27  # three red discs <end>
    full = NoisyCaptioner(image_size=16, vocabulary="full", **MICRO_CAPTIONER)
    assert len(full.vocab) == 49408 and full.decode_tokens(full.tokenize(["a red zebra"])) == ["a red zebra"]
    with pytest.raises(ValueError, match="non-empty"):
        net.tokenize(["a red circle", "  "])
