"""The upsampler end to end through the real CLI (a micro super-resolution U-Net on 64px shapes, trained
on 32px crops paired with their 8px versions), its paired-crop DataModule, its U-Net on other sizes,
`t2i upsample`, and `t2i sample` chaining it after the decoder."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_lightning.accelerator import resolve_precision
from t2i_lightning.data.decode import decode_image_caption
from t2i_lightning.data.inspect import read_samples
from t2i_lightning.data.superres import SuperResDataModule, downsample
from t2i_lightning.nn.sr_unet import SuperResUNet
from t2i_lightning.pipeline import load_upsampler
from t2i_lightning.stages.diffusion import DiffusionStage
from t2i_lightning.stages.low_res_image import LowResImage
from t2i_lightning.training.checkpoint_io import INTEGRITY_KEY

from .cli_runs import T2I, make_dry_run, run, scalars

MICRO_SR = dict(image_size=64, base_channels=16, channel_mult=(1, 2), groups=8)  # downsampling factor 2


def upsampler_stage(net: SuperResUNet, parameterization: str = "eps", **conditioning) -> DiffusionStage:
    """An upsampler built in Python: a diffusion stage on a :class:`LowResImage` conditioning (with
    ``conditioning``'s arguments), sampling DDPM-10 with static clipping unless told otherwise."""
    return DiffusionStage(net, LowResImage(**conditioning), parameterization=parameterization, sampler="ddpm",
                          steps=10, threshold=None)  # fmt: skip


def upsampler_args(data, runs) -> list[str]:
    """`t2i fit --config stages/upsampler.yaml` for a micro upsampler (stages/tiny/upsampler.yaml: 6 steps,
    a grid every 3)."""
    return [
        T2I, "fit", "--config", "stages/upsampler.yaml", "--config", "stages/tiny/upsampler.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--data.init_args.train", str(data), "--data.init_args.val", str(data),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def upsampler(shapes_dir, tmp_path_factory):
    """A micro upsampler (64px from 16px) fitted through `t2i fit --config stages/upsampler.yaml` in
    bf16-mixed, as `make train-upsampler` fits it on CPUs with native bf16."""
    runs = tmp_path_factory.mktemp("upsampler_runs")
    run(*upsampler_args(shapes_dir, runs), "--trainer.precision", "bf16-mixed")
    return {"runs": runs / "upsampler", "checkpoint": runs / "upsampler" / "checkpoints" / "last.ckpt"}


def test_fit_writes_an_ema_checkpoint_grids_and_superres_metrics(upsampler):
    checkpoint = torch.load(upsampler["checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6 and "averaging_state" in checkpoint
    name = "net.unet.conv_in.weight"
    assert checkpoint["state_dict"][name].shape[1] == 6  # the noisy image and the upsampled low-res input
    assert checkpoint["state_dict"]["conditioning.predictor.unet.conv_in.weight"].shape[1] == 3  # the upsampled input alone
    assert not torch.equal(checkpoint["state_dict"][name], checkpoint["current_model_state"][name])  # EMA weights
    logged = scalars(upsampler["runs"])
    for metric in ("psnr", "ssim", "sharpness"):
        for method in ("bicubic", "upsampler"):
            assert f"val/{metric}_{method}" in logged, (metric, method)
    assert {"train/loss", "val/loss", "train/predictor", "val/predictor"} <= logged.keys()
    for tag in ("train/loss", "val/loss", "train/predictor", "val/psnr_upsampler"):
        assert np.all(np.isfinite(logged[tag])), tag
    for state in ("state_dict", "current_model_state"):  # autocast in the passes only: float32 weights
        assert all(w.dtype == torch.float32 for w in checkpoint[state].values() if w.is_floating_point())
    grids = sorted((upsampler["runs"] / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000003.png", "step-0000006.png"]
    with Image.open(grids[-1]) as grid:
        assert grid.width >= 4 * 64  # low-res | bicubic | upsampler | ground truth, at 64px


def test_make_trains_the_upsampler_at_the_precision_it_is_given():
    def precision(*variables):
        out = make_dry_run("train-upsampler", "RUNS=/nonexistent", "DATA=/nonexistent", *variables)
        fit = next(line for line in out if " fit --config stages/upsampler.yaml" in line)
        return re.search(r"--trainer.precision (\S+)", fit).group(1)

    assert precision("PRECISION=bf16-mixed") == "bf16-mixed"
    assert precision("PRECISION=32-true") == "32-true"
    assert precision() == "auto"  # decided in Python from the accelerator used (test_architecture.py)


def test_crop_pairs_are_exact_and_lie_on_the_factor_grid(shapes_dir):
    data = SuperResDataModule(
        train=str(shapes_dir), val=str(shapes_dir), image_size=64, factor=4, crop=32, batch_size=8, num_workers=0,
        epoch_size=16,
    )  # fmt: skip
    data.setup("fit")
    full = {}
    for url in data.urls["train"]:
        for sample in read_samples(url):
            full[sample["__key__"]] = decode_image_caption(sample, 64)["image"]
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["low_res"].shape == (8, 3, 8, 8)
    torch.testing.assert_close(batch["low_res"], downsample(batch["image"], 4), rtol=0, atol=0)
    corners = set()
    for key, crop in zip(batch["key"], batch["image"], strict=True):
        matches = [(top, left) for top in range(0, 33, 4) for left in range(0, 33, 4)
                   if torch.equal(full[key][:, top : top + 32, left : left + 32], crop)]  # fmt: skip
        assert matches, f"{key}: the crop is not a crop of its image at a multiple of the factor"
        corners.add(matches[0])
    assert len(corners) > 1  # training crops are random
    val = next(iter(data.val_dataloader()))
    whole = decode_image_caption(read_samples(data.urls["val"][0], limit=1)[0], 64)["image"]
    torch.testing.assert_close(val["image"][0], whole[:, 16:48, 16:48], rtol=0, atol=0)  # the central crop
    refs = data.reference_pairs(3)
    assert refs["image"].shape == (3, 3, 64, 64) and torch.equal(refs["image"][0], whole)
    torch.testing.assert_close(refs["low_res"], downsample(refs["image"], 4), rtol=0, atol=0)


def test_embedding_conditioned_batches_join_the_embeddings(pipeline):
    data = SuperResDataModule(
        train=None, val=str(pipeline["data"]), image_size=64, crop=32, embeddings=str(pipeline["emb"]), num_workers=0
    )
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch["img_emb"].shape == (len(batch["key"]), 32)
    stage = upsampler_stage(SuperResUNet(**MICRO_SR, cond_dim=32), stats=str(pipeline["emb"] / "stats.json"))
    losses = stage._losses(batch, 0.0)
    assert losses["loss"].shape == (len(batch["key"]),) and torch.isfinite(losses["loss"]).all()
    with pytest.raises(ValueError, match="image_embeddings"):
        stage.sample(batch["low_res"][:1], steps=2, progress=False)


def test_the_unet_applies_to_other_sizes_and_reads_its_conditions():
    torch.manual_seed(0)
    net = SuperResUNet(**MICRO_SR).eval()
    t = torch.tensor([10, 700])
    for low in ((8, 8), (12, 12), (16, 8)):  # the training crop's 8px, and sizes it never saw
        x = torch.randn(2, 3, low[0] * 4, low[1] * 4)
        out = net(x, t, {"low_res": torch.randn(2, 3, *low), "aug_level": torch.tensor([0.0, 0.3])})
        assert out.shape == (2, 6, *x.shape[-2:])
    x, low_res, level = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 8, 8), torch.tensor([0.1])
    with torch.no_grad():
        base = net(x, t[:1], {"low_res": low_res, "aug_level": level})
        other_image = net(x, t[:1], {"low_res": torch.randn(1, 3, 8, 8), "aug_level": level})
        other_level = net(x, t[:1], {"low_res": low_res, "aug_level": torch.tensor([0.4])})
    assert (base - other_image).abs().max() > 1e-4 and (base - other_level).abs().max() > 1e-4
    with pytest.raises(ValueError, match="times 4"):
        net(torch.randn(1, 3, 32, 32), t[:1], {"low_res": torch.randn(1, 3, 16, 16), "aug_level": level})
    deeper = SuperResUNet(**{**MICRO_SR, "channel_mult": (1, 1, 1, 1)})  # halves three times: sides must be multiples of 8
    with pytest.raises(ValueError, match="divisible by the U-Net's downsampling factor 8"):
        deeper(torch.randn(1, 3, 36, 36), t[:1], {"low_res": torch.randn(1, 3, 9, 9), "aug_level": level})


def test_upsample_command_writes_the_requested_size(upsampler, shapes_dir, tmp_path):
    sample = read_samples(sorted(shapes_dir.glob("val-*.tar"))[0], limit=1)[0]
    small = tmp_path / "small.png"
    Image.open(io.BytesIO(sample["png"])).resize((16, 16)).save(small)
    out = tmp_path / "new" / "big.png"
    result = run(T2I, "upsample", "--in", str(small), "--out", str(out), "--upsampler", str(upsampler["checkpoint"]),
                 "--up-steps", "2")  # fmt: skip
    assert "16x16 -> 64x64" in result.stdout
    with Image.open(out) as image:
        assert image.size == (64, 64) and np.asarray(image).std() > 0
    Image.new("RGB", (20, 12)).save(tmp_path / "wide.png")  # any size the U-Net can halve
    run(T2I, "upsample", "--in", str(tmp_path / "wide.png"), "--out", str(tmp_path / "wide4.png"),
        "--upsampler", str(upsampler["checkpoint"]), "--up-steps", "2")  # fmt: skip
    with Image.open(tmp_path / "wide4.png") as image:
        assert image.size == (80, 48)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"--in": "nowhere.png"}, "Image not found: nowhere.png"),
        ({"--aug-level": "1.5"}, "--aug-level must be in [0, 1]"),
        ({"--up-steps": "0"}, "--up-steps must be positive"),
        ({"--upsampler": "nowhere/last.ckpt"}, "make train-upsampler"),
    ],
)
def test_upsample_rejects_bad_input_clearly(upsampler, tmp_path, overrides, message):
    Image.new("RGB", (16, 16)).save(tmp_path / "small.png")
    options = {"--in": str(tmp_path / "small.png"), "--upsampler": str(upsampler["checkpoint"]),
               "--out": str(tmp_path / "x.png"), **overrides}  # fmt: skip
    result = run(T2I, "upsample", *(a for pair in options.items() for a in pair), check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_decoder_checkpoint_is_not_taken_for_an_upsampler(decoder, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "small.png")
    result = run(T2I, "upsample", "--in", str(tmp_path / "small.png"), "--out", str(tmp_path / "x.png"),
                 "--upsampler", str(decoder["decoder"]), check=False)  # fmt: skip
    assert result.returncode != 0 and "is not a checkpoint of the upsampler stage but of the decoder stage" in result.stderr


def test_sample_chains_the_upsampler_after_the_decoder(decoder, upsampler, tmp_path):
    common = ["--prompt", "a red circle", "--n", "2", "--steps", "2", "--decoder", str(decoder["decoder"]),
              "--translator", str(decoder["translator"])]  # fmt: skip
    big = tmp_path / "big.png"
    result = run(T2I, "sample", *common, "--upsampler", str(upsampler["checkpoint"]), "--up-steps", "2",
                 "--out", str(big))  # fmt: skip
    assert "2 images of 128x128" in result.stdout  # the micro decoder's 32px, upsampled 4x
    with Image.open(big) as image:
        assert image.size == (2 * 128, 128)
    small = tmp_path / "small.png"
    run(T2I, "sample", *common, "--no-upsample", "--out", str(small))
    with Image.open(small) as image:
        assert image.size == (2 * 32, 32)
    result = run(T2I, "sample", *common, "--no-upsample", "--upsampler", str(upsampler["checkpoint"]),
                 "--out", str(tmp_path / "x.png"), check=False)  # fmt: skip
    assert result.returncode != 0 and "contradict" in result.stderr


def test_sampling_is_reproducible_for_a_seed(upsampler):
    stage = DiffusionStage.load_from_checkpoint(upsampler["checkpoint"], map_location="cpu", weights_only=False)
    low_res = torch.rand(1, 3, 8, 8) * 2 - 1
    first, second, other = (
        stage.sample(low_res, steps=2, progress=False, generator=torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)
    )
    assert first.shape == (1, 3, 32, 32) and torch.equal(first, second) and not torch.equal(first, other)


def test_sampling_with_a_bf16_unet_stays_close_to_float32_and_is_not_the_same_run(upsampler):
    """``precision="bf16-mixed"`` runs the diffusion U-Net in bfloat16 (the images differ from float32's by
    rounding, no more), while the predictor's pass and the sampler stay float32."""
    stage = load_upsampler(str(upsampler["checkpoint"]))
    low_res = torch.rand(2, 3, 16, 16) * 2 - 1
    seen = []
    hook = lambda module, args, out: seen.append((module, torch.is_autocast_enabled("cpu")))  # noqa: E731
    for unet in (stage.conditioning.predictor.unet, stage.net.unet):
        unet.register_forward_hook(hook)

    def draw(precision):
        return stage.sample(low_res, steps=3, progress=False, precision=precision,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip

    full, half = draw("32-true"), draw("bf16-mixed")
    assert half.dtype == torch.float32 and half.shape == full.shape == (2, 3, 64, 64)
    assert not torch.equal(full, half) and torch.equal(draw("bf16-mixed"), half)
    assert (full - half).abs().mean() < 0.02
    autocast = {(module is stage.net.unet, on) for module, on in seen}
    assert autocast == {(False, False), (True, False), (True, True)}  # the predictor never under autocast


def test_sampling_draws_batches_of_equal_pixels_from_one_generator(upsampler, monkeypatch):
    stage = load_upsampler(str(upsampler["checkpoint"]))
    batches = []
    draw_batch = stage.draw
    monkeypatch.setattr(stage, "draw", lambda fn, shape, **kw: batches.append(shape[0]) or draw_batch(fn, shape, **kw))
    low_res = torch.rand(5, 3, 8, 8) * 2 - 1

    def draw(seed=0, **kw):
        return stage.sample(low_res, steps=2, progress=False, generator=torch.Generator().manual_seed(seed), **kw)

    images = draw(max_batch_pixels=2 * 32 * 32 + 100)
    assert stage.net.factor == 4 and batches == [2, 2, 1]  # two 32px outputs per batch
    assert images.shape == (5, 3, 32, 32) and torch.equal(images, draw(max_batch_pixels=2 * 32 * 32))
    batches.clear()
    assert draw(max_batch_pixels=10).shape == (5, 3, 32, 32) and batches == [1] * 5  # at least one image
    batches.clear()
    assert not torch.equal(draw(max_batch_pixels=None), images) and batches == [5]  # one batch: other noise


def test_evaluate_upsampler_scores_bicubic_and_each_setting(upsampler, shapes_dir, tmp_path):
    out = tmp_path / "report.json"
    result = run(T2I, "evaluate-upsampler", "--upsampler", str(upsampler["checkpoint"]), "--data", str(shapes_dir),
                 "--n", "3", "--aug-levels", "0", "0.2", "--steps", "2", "--out", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    assert report["images"] == 3 and report["size"] == [64, 64] and report["factor"] == 4
    rows = report["rows"]
    assert [(r["method"], r.get("aug_level")) for r in rows] == [("bicubic", None), ("upsampler", 0.0), ("upsampler", 0.2)]
    assert 10 < rows[0]["psnr"] < 60 and 0 < rows[0]["ssim"] <= 1 and 0 < rows[0]["sharpness"] < 1  # bicubic blurs
    assert all(r["s_per_image"] > 0 for r in rows) and "PSNR dB" in result.stdout
    assert f"U-Net {resolve_precision('auto', 'cpu')}" in result.stdout  # the default (auto) precision, resolved, beside the scores


class _ZeroNet(SuperResUNet):
    """A super-resolution U-Net whose prediction is 0 everywhere (x̂_0 = 0 in the x0 parameterization)."""

    def forward(self, x, t, cond):
        return super().forward(x, t, cond) * 0


def test_residual_mode_diffuses_the_detail_over_bicubic_and_adds_the_bicubic_back():
    stage = upsampler_stage(_ZeroNet(**MICRO_SR, learn_variance=False), parameterization="x0", residual=True)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    low_res = downsample(image, 4)
    bicubic = torch.nn.functional.interpolate(low_res, scale_factor=4, mode="bicubic").clamp(-1, 1)
    cond = stage.conditioning.encode(low_res, device=stage.device, aug_level=0.0)
    batch = {"image": image, "low_res": low_res}
    torch.testing.assert_close(stage.conditioning.target(batch, cond, stage.net), (image - bicubic, {}))
    # a network predicting no detail gives back exactly the bicubic image (DDIM with η = 0 ends at x̂_0)
    drawn = stage.sample(low_res, aug_level=0.0, sampler="ddim", steps=3, progress=False)
    torch.testing.assert_close(drawn, bicubic)
    plain = upsampler_stage(_ZeroNet(**MICRO_SR, learn_variance=False), parameterization="x0")
    torch.testing.assert_close(plain.conditioning.target(batch, cond, plain.net), (image, {}))
    assert plain.sample(low_res, aug_level=0.0, sampler="ddim", steps=3, progress=False).abs().max() < 1e-5


class _OracleNet(SuperResUNet):
    """Predicts a fixed x̂_0 (``target``) whatever its input."""

    target: torch.Tensor

    def forward(self, x, t, cond):
        return self.target.expand_as(x) + super().forward(x, t, cond) * 0


def test_a_scaled_residual_is_diffused_scaled_and_sampled_back_to_the_image():
    image = (torch.rand(2, 3, 64, 64) * 1.6 - 0.8).clamp(-1, 1)
    low_res = downsample(image, 4)
    bicubic = torch.nn.functional.interpolate(low_res, scale_factor=4, mode="bicubic").clamp(-1, 1)
    net = _OracleNet(**MICRO_SR, learn_variance=False)
    stage = upsampler_stage(net, parameterization="x0", residual=True, residual_scale=10.0)
    cond = stage.conditioning.encode(low_res, device=stage.device, aug_level=0.0)
    target, extra = stage.conditioning.target({"image": image, "low_res": low_res}, cond, stage.net)
    torch.testing.assert_close(target, 10.0 * (image - bicubic))
    assert extra == {}
    net.target = target  # a network that knows the scaled residual exactly draws the image itself
    drawn = stage.sample(low_res, aug_level=0.0, sampler="ddim", steps=3, progress=False)
    torch.testing.assert_close(drawn, image, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="residual_scale"):
        upsampler_stage(net, residual=True, residual_scale=0.0)


class _OracleRegressor(SuperResUNet):
    """A regressor that returns a fixed estimate (``estimate``) whatever its condition."""

    estimate: torch.Tensor

    def regress(self, cond):
        return self.estimate + super().regress(cond) * 0


def test_a_predictor_gives_the_residual_base_and_a_zero_refiner_returns_its_estimate():
    image = (torch.rand(2, 3, 64, 64) * 1.6 - 0.8).clamp(-1, 1)
    low_res = downsample(image, 4)
    bicubic = torch.nn.functional.interpolate(low_res, scale_factor=4, mode="bicubic").clamp(-1, 1)
    predictor = _OracleRegressor(**MICRO_SR, learn_variance=False, noisy_input=False)
    stage = upsampler_stage(
        _ZeroNet(**MICRO_SR, learn_variance=False), parameterization="x0", residual=True, residual_scale=10.0,
        predictor=predictor,
    )  # fmt: skip
    batch, cond = {"image": image, "low_res": low_res}, stage.conditioning.encode(low_res, device=stage.device, aug_level=0.0)
    half_way = 5.0 * (image - bicubic)  # the predictor has half of the scaled residual
    predictor.estimate = half_way
    target, extra = stage.conditioning.target(batch, cond, stage.net)
    torch.testing.assert_close(target, 10.0 * (image - bicubic) - half_way)  # the refiner's share: the other half
    torch.testing.assert_close(extra["predictor"], half_way.pow(2).mean(dim=(1, 2, 3)))
    # sampled from pure noise, a refiner that adds nothing leaves the predictor's estimate
    drawn = stage.sample(low_res, aug_level=0.0, sampler="ddim", steps=3, progress=False)
    torch.testing.assert_close(drawn, (bicubic + half_way / 10.0).clamp(-1, 1), atol=1e-5, rtol=0)
    predictor.estimate = 10.0 * (image - bicubic)  # an exact predictor: nothing left to refine, no loss
    target, extra = stage.conditioning.target(batch, cond, stage.net)
    assert target.abs().max() < 1e-5 and extra["predictor"].max() < 1e-9


def test_the_predictor_learns_from_its_own_loss_only():
    torch.manual_seed(0)
    predictor = SuperResUNet(**MICRO_SR, learn_variance=False, noisy_input=False)
    stage = upsampler_stage(SuperResUNet(**MICRO_SR), parameterization="v", residual=True, residual_scale=10.0,
                           predictor=predictor)  # fmt: skip
    image = torch.rand(4, 3, 32, 32) * 2 - 1
    batch = {"image": image, "low_res": downsample(image, 4), "key": list("abcd")}
    losses = stage._losses(batch, 0.0)
    torch.testing.assert_close(losses["loss"], losses["simple"] + 1e-3 * losses["vlb"] + losses["predictor"])
    (losses["loss"] - losses["predictor"]).mean().backward()  # the diffusion loss alone: the target is detached
    assert all(p.grad is None or not p.grad.any() for p in predictor.parameters())
    assert any(p.grad is not None and p.grad.any() for p in stage.net.parameters())
    stage.zero_grad()
    stage._losses(batch, 0.0)["predictor"].mean().backward()
    assert any(p.grad is not None and p.grad.any() for p in predictor.parameters())


def test_a_regressor_reads_the_condition_alone_and_refuses_misuse():
    regressor = SuperResUNet(**MICRO_SR, learn_variance=False, noisy_input=False)
    assert regressor.unet.conv_in.in_channels == 3
    cond = {"low_res": torch.randn(2, 3, 8, 12), "aug_level": torch.tensor([0.0, 0.2])}
    assert regressor.regress(cond).shape == (2, 3, 32, 48)
    with pytest.raises(ValueError, match="call regress"):
        regressor(torch.randn(2, 3, 32, 48), torch.tensor([1, 2]), cond)
    with pytest.raises(ValueError, match="call it as net"):
        SuperResUNet(**MICRO_SR).regress(cond)
    with pytest.raises(ValueError, match="no variance to learn"):
        SuperResUNet(**MICRO_SR, noisy_input=False)
    with pytest.raises(ValueError, match="set residual true"):
        upsampler_stage(SuperResUNet(**MICRO_SR), predictor=regressor)
    with pytest.raises(ValueError, match="noisy_input false"):
        upsampler_stage(SuperResUNet(**MICRO_SR), residual=True, predictor=SuperResUNet(**MICRO_SR))


def test_the_predictor_reads_the_clean_low_res_image_not_the_augmented_condition():
    torch.manual_seed(0)
    predictor = SuperResUNet(**MICRO_SR, learn_variance=False, noisy_input=False).eval()
    stage = upsampler_stage(SuperResUNet(**MICRO_SR), residual=True, residual_scale=10.0, predictor=predictor)
    low_res = torch.rand(2, 3, 8, 8) * 2 - 1
    noisy = stage.conditioning.encode(low_res, device=stage.device, aug_level=0.5, generator=torch.Generator().manual_seed(1))
    assert (noisy["low_res"] - low_res).abs().max() > 0.1  # the diffusion network's condition is corrupted
    with torch.no_grad():
        base, predicted = stage.conditioning.residual_base(low_res, noisy)
        expected = predictor.regress({"low_res": low_res, "aug_level": torch.zeros(2)})
    torch.testing.assert_close(predicted, expected)
    torch.testing.assert_close(base, stage.conditioning.bicubic(low_res) + expected / 10.0)


def as_legacy(checkpoint: dict, class_path: str) -> dict:
    """The layout the three old diffusion classes wrote (conditioning settings as the stage's own
    hyperparameters, conditioning tensors at the top of the state dict, none of the arguments they lacked).
    Checked against checkpoints the old code wrote, sampled by both codes: docs/experiments.md."""
    hparams = dict(checkpoint["hyper_parameters"])
    arguments = dict(hparams.pop("conditioning")["init_args"])
    if "drop_prob" in arguments:
        arguments["cond_drop_prob"] = arguments.pop("drop_prob")
    lacked = ("threshold", "schedule_shift", "p2_gamma", "p2_k") if class_path.endswith("UpsamplerStage") else ("sampler", "steps", "threshold")
    hparams = {k: v for k, v in hparams.items() if k not in lacked} | arguments | {"_class_path": class_path}
    states = {key: {k.removeprefix("conditioning."): v for k, v in checkpoint[key].items()} for key in ("state_dict", "current_model_state")}
    kept = {k: v for k, v in checkpoint.items() if k != INTEGRITY_KEY}  # they wrote no tensor digest
    return {**kept, "hyper_parameters": hparams, **states}


def identical(a, b) -> bool:
    """Equal nested containers of tensors, keys in the same order."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(identical, a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.slow  # 35 s; a one-time migration (make test-all runs it), to keep make test near 15 minutes
def test_old_decoder_and_upsampler_checkpoints_are_refused_with_the_command_that_upgrades_them_losslessly(
    upsampler, decoder, tmp_path
):
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    low_res = torch.rand(2, 3, 8, 8) * 2 - 1
    cases = [("upsampler", upsampler["checkpoint"], "t2i_lightning.stages.upsampler.UpsamplerStage"),
             ("decoder", decoder["decoder"], "t2i_lightning.stages.decoder.DecoderStage")]  # fmt: skip
    for name, path, old_class in cases:
        original = torch.load(path, map_location="cpu", weights_only=True)
        old = tmp_path / f"{name}.ckpt"
        torch.save(as_legacy(original, old_class), old)
        use = (["upsample", "--in", str(tmp_path / "small.png"), "--upsampler"] if name == "upsampler"
               else ["sample", "--prompt", "a red circle", "--no-upsample", "--decoder"])  # fmt: skip
        refused = run(T2I, *use, str(old), "--out", str(tmp_path / "x.png"), check=False)
        assert refused.returncode != 0 and f"`t2i upgrade-checkpoint {old}` converts it" in refused.stderr, refused.stderr
        legacy_bytes = old.read_bytes()
        done = run(T2I, "upgrade-checkpoint", str(old))
        assert f"{old}: {old_class.rpartition('.')[2]} -> DiffusionStage" in done.stdout
        assert (tmp_path / f"{name}.ckpt.pre-diffusion-stage").read_bytes() == legacy_bytes  # the original is kept
        upgraded = torch.load(old, map_location="cpu", weights_only=True)
        assert upgraded["hyper_parameters"] == original["hyper_parameters"]
        for key in ("state_dict", "current_model_state", "optimizer_states", "averaging_state"):
            assert identical(upgraded[key], original[key]), key
        assert "left alone (already a DiffusionStage" in run(T2I, "upgrade-checkpoint", str(old)).stdout
    drawn = [load_upsampler(str(p)).sample(low_res, steps=2, progress=False, generator=torch.Generator().manual_seed(0))
             for p in (upsampler["checkpoint"], tmp_path / "upsampler.ckpt")]  # fmt: skip
    assert torch.equal(*drawn)
