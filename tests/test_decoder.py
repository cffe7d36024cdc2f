"""The 64px decoder stage end to end through the real CLI (a micro U-Net on micro-CLIP embeddings),
its joined image+embedding DataModule, its U-Net, and `t2i sample`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_lightning.data.decode import ShardMismatchError, decode_image_caption
from t2i_lightning.data.embeddings import IMAGE_MEMBER, load_npy
from t2i_lightning.data.inspect import read_samples
from t2i_lightning.data.joined import EmbeddingLookup, ImageEmbeddingDataModule
from t2i_lightning.data.shards import resolve_shards, write_shard
from t2i_lightning.eval.nearest import nearest_training_images, split_image_embeddings
from t2i_lightning.nn.embedding_token_unet import EmbeddingTokenUNet
from t2i_lightning.nn.unet import ConditionalUNet
from t2i_lightning.pipeline import load_chain
from t2i_lightning.stages.conditioning import ImageEmbedding
from t2i_lightning.stages.diffusion import DiffusionStage

from .cli_runs import MICRO, T2I, decoder_args, make_dry_run, run, scalars

MICRO_UNET = dict(
    image_size=32, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
    head_channels=16, groups=8, cond_dim=32,
)  # fmt: skip


def test_fit_writes_an_ema_checkpoint_losses_and_sample_grids(decoder):
    checkpoint = torch.load(decoder["decoder"], map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6
    ema, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert "averaging_state" in checkpoint
    name = "net.unet.conv_in.weight"
    assert not torch.equal(ema[name], raw[name]), "the checkpoint's state_dict must hold the EMA weights"
    assert checkpoint["clip_identity"]["model"] == MICRO
    # stages/decoder.yaml's U-Net works on 2x2 patches of the image and its layout picture (24 channels
    # in), and the checkpoint rebuilds it so
    assert ema[name].shape[1] == 24
    net = DiffusionStage.load_from_checkpoint(decoder["decoder"], weights_only=True).net
    assert (net.patch_size, net.layout_size) == (2, 8)
    logged = scalars(decoder["decoder_runs"] / "decoder")
    for tag in ("train/loss", "train/simple", "train/vlb", "train/layout", "train/grad_norm", "val/loss", "val/layout",
                "val/recon_colour_error", "val/recon_colour_error_random_pairs",
                "val/recon_object_colour_hits", "val/recon_object_colour_hits_random_pairs", "val/recon_object_colour_near",
                "val/recon_object_colour_present", "val/recon_object_colour_present_random_pairs"):  # fmt: skip
        assert tag in logged, tag
    assert any(tag.startswith("lr-AdamW") for tag in logged)
    grids = sorted((decoder["decoder_runs"] / "decoder" / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000003.png", "step-0000006.png"]
    with Image.open(grids[-1]) as grid:
        assert grid.width > 4 * 96  # 4 reconstructions per row at tile 96


def test_a_decoder_fit_on_images_its_embeddings_do_not_match_fails_in_one_line(pipeline, tmp_path):
    """Raised in a DataLoader worker, the mismatch used to end a ~60-line traceback; then the exit hung now
    and then, joining the worker that ignores SIGTERM (the subprocess timeout catches that)."""
    data = tmp_path / "data"
    data.mkdir()
    for shard in resolve_shards(str(pipeline["data"])):
        samples = read_samples(shard)
        write_shard(data / Path(shard).name, [{**s, "__key__": "other_" + s["__key__"]} for s in samples])
    args = decoder_args({**pipeline, "data": data}, tmp_path / "runs")
    result = run(*args, "--data.init_args.num_workers", "1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    message = [line for line in result.stderr.splitlines() if line.startswith("t2i fit: error:")]
    assert len(message) == 1 and "make embed" in message[0]


def test_sample_writes_the_requested_count_and_size(decoder, tmp_path):
    out = tmp_path / "new" / "dir" / "samples.png"
    result = run(
        T2I, "sample", "--no-upsample", "--prompt", "a red circle", "--n", "3", "--steps", "4", "--decoder", str(decoder["decoder"]),
        "--translator", str(decoder["translator"]), "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert "3 images of 32x32" in result.stdout
    with Image.open(out) as image:
        assert image.size == (3 * 32, 32)
    strip = tmp_path / "strip.png"
    run(
        T2I, "sample", "--no-upsample", "--interpolate", "a red circle", "a blue square", "--frames", "4", "--sampler", "ddpm",
        "--steps", "5", "--cfg", "1", "--threshold", "0", "--decoder", str(decoder["decoder"]),
        "--translator", str(decoder["translator"]), "--out", str(strip), "--device", "auto",
    )  # fmt: skip
    with Image.open(strip) as image:
        assert image.size == (4 * 32, 32)


def test_the_chain_loads_every_model_on_the_device_asked_for(decoder):
    """``--device`` reaches the decoder, the translator and their CLIP (the meta device stands in for a GPU)."""
    chain = load_chain(str(decoder["decoder"]), str(decoder["translator"]), device=torch.device("meta"))
    models = {"decoder": chain.decoder, "translator": chain.embedder.translator, "clip": chain.embedder.clip}
    for name, model in models.items():
        assert {p.device.type for p in model.parameters()} == {"meta"}, name
        assert {b.device.type for b in model.buffers()} <= {"meta"}, name


def test_several_prompts_give_one_row_each_equal_to_that_prompt_sampled_alone(decoder, tmp_path):
    common = ["--no-upsample", "--n", "2", "--steps", "3", "--decoder", str(decoder["decoder"]),
              "--translator", str(decoder["translator"])]  # fmt: skip
    run(T2I, "sample", *common, "--prompt", "a red circle", "two blue squares", "--out", str(tmp_path / "rows.png"))
    run(T2I, "sample", *common, "--prompt", "two blue squares", "--out", str(tmp_path / "alone.png"))
    with Image.open(tmp_path / "rows.png") as rows, Image.open(tmp_path / "alone.png") as alone:
        assert rows.size == (2 * 32, 2 * 32) and alone.size == (2 * 32, 32)
        second = np.asarray(rows)[32:]
        assert np.array_equal(second, np.asarray(alone)) and not np.array_equal(second, np.asarray(rows)[:32])


def test_sample_from_an_image_with_image_guidance(decoder, tmp_path):
    source = read_samples(str(sorted(decoder["data"].glob("val-*.tar"))[0]), limit=1)[0]
    path = tmp_path / "source.png"
    path.write_bytes(source["png"])
    out = tmp_path / "recon.png"
    run(
        T2I, "sample", "--no-upsample", "--from-image", str(path), "--n", "2", "--steps", "3", "--image-guidance", str(path),
        "--ig-scale", "0.01", "--decoder", str(decoder["decoder"]), "--translator", str(decoder["translator"]),
        "--out", str(out),
    )  # fmt: skip
    assert Image.open(out).size == (64, 32)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "   "], "must not be empty"),
        (["--prompt", "a red circle", "--n", "0"], "--n must be positive"),
        (["--prompt", "a red circle", "--cfg", "-1"], "must be >= 0"),
        (["--prompt", "a red circle", "--decoder", "nowhere/last.ckpt"], "make train-decoder"),
    ],
)
def test_sample_rejects_bad_input_clearly(decoder, tmp_path, args, message):
    result = run(T2I, "sample", "--no-upsample", *args, "--translator", str(decoder["translator"]), "--out", str(tmp_path / "x.png"),
                 check=False)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_joined_batches_carry_each_keys_own_embeddings(pipeline):
    data = ImageEmbeddingDataModule(
        embeddings=str(pipeline["emb"]), train=None, val=str(pipeline["data"]), image_size=32, batch_size=8,
        num_workers=0,
    )  # fmt: skip
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["img_emb"].shape == batch["txt_emb"].shape == (8, 32)
    shard = sorted(pipeline["emb"].glob("val-*.tar"))[0]
    expected = {s["__key__"]: load_npy(s[IMAGE_MEMBER]) for s in read_samples(str(shard))}
    for key, embedding in zip(batch["key"], batch["img_emb"], strict=True):
        np.testing.assert_array_equal(embedding.numpy(), expected[key].astype(np.float32))


def test_embedding_lookup_reads_each_shard_once_while_shuffled_samples_alternate(pipeline):
    """The shuffle buffer interleaves samples of neighbouring shards before decoding: the lookup must
    keep several shards, not re-read one for every sample (a 20x slower input pipeline)."""
    images = sorted(pipeline["data"].glob("train-*.tar"))
    keys = {shard: [s["__key__"] for s in read_samples(str(pipeline["emb"] / shard.name))] for shard in images[:3]}
    lookup = EmbeddingLookup(pipeline["emb"], capacity=2)
    first, second, third = images[:3]
    for a, b in zip(keys[first], keys[second], strict=True):  # alternating between two shards
        lookup(str(first), a)
        lookup(str(second), b)
    assert lookup.shard_reads == 2
    lookup(str(third), keys[third][0])  # evicts the least recently used (the first)
    lookup(str(second), keys[second][0])
    assert lookup.shard_reads == 3
    lookup(str(first), keys[first][0])
    assert lookup.shard_reads == 4


def test_a_key_missing_from_the_embedding_shard_stops_the_run(pipeline, tmp_path):
    emb = tmp_path / "emb"
    shutil.copytree(pipeline["emb"], emb)
    shard = sorted(emb.glob("val-*.tar"))[0]
    samples = read_samples(str(shard))
    write_shard(shard, samples[1:])  # the first key is gone
    data = ImageEmbeddingDataModule(
        embeddings=str(emb), train=None, val=str(pipeline["data"]), image_size=32, batch_size=8, num_workers=0
    )
    data.setup("validate")
    with pytest.raises(ShardMismatchError, match=samples[0]["__key__"]):
        next(iter(data.val_dataloader()))


def test_unet_shapes_and_size_check():
    net = ConditionalUNet(**MICRO_UNET)
    cond = torch.randn(2, 32)
    for size in (32, 48):  # any multiple of the downsampling factor
        out = net(torch.randn(2, 3, size, size), torch.tensor([0, 999]), cond)
        assert out.shape == (2, 6, size, size)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(2, 3, 33, 33), torch.tensor([0, 1]), cond)
    with pytest.raises(ValueError, match="multiple of groups"):
        ConditionalUNet(**{**MICRO_UNET, "base_channels": 12})
    fixed = ConditionalUNet(**{**MICRO_UNET, "learn_variance": False})
    assert fixed(torch.randn(1, 3, 32, 32), torch.tensor([5]), cond[:1]).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kind", [ConditionalUNet, EmbeddingTokenUNet])
def test_patched_unet_returns_each_pixels_prediction_then_variance(kind):
    """patch_size 2: the U-Net sees 2x2 patches (12 channels at half the side) and pixel_shuffle puts its
    24 output channels back as [prediction (3), variance (3)] per pixel; the variance half is exactly the
    U-Net's last 12 channels, so a constant there shows up in channels 3-5 only."""
    net = kind(**{**MICRO_UNET, "patch_size": 2, "attention_resolutions": (8,)})
    inner = net if kind is ConditionalUNet else net.net  # EmbeddingTokenUNet wraps the text U-Net
    unet = inner.unet
    assert unet.config.sample_size == 16 and unet.config.in_channels == 12 and inner.downsampling == 4
    cond = torch.randn(2, 32)
    with torch.no_grad():
        unet.conv_out.weight[12:] = 0
        unet.conv_out.bias[12:] = 0.25
        out = net(torch.randn(2, 3, 32, 32), torch.tensor([3, 700]), cond)
    assert out.shape == (2, 6, 32, 32)
    assert torch.equal(out[:, 3:], torch.full_like(out[:, 3:], 0.25)) and out[:, :3].std() > 0
    assert net(torch.randn(1, 3, 48, 48), torch.tensor([1]), cond[:1]).shape == (1, 6, 48, 48)
    with pytest.raises(ValueError, match="divisible by the U-Net's downsampling factor 4"):
        net(torch.randn(1, 3, 30, 30), torch.tensor([1]), cond[:1])
    with pytest.raises(ValueError, match="patch_size must be a positive divisor"):
        kind(**{**MICRO_UNET, "patch_size": 3})


def test_layout_head_picture_reaches_the_unet_detached_and_trains_on_the_images_area_averages():
    """layout_size 4: the head's 4 x 4 picture of the condition is read beside x_t (3 more input
    channels) without the denoising loss reaching the head; the stage trains the head alone on its MSE
    to the images' 4 x 4 area averages, added to the total loss."""
    net = ConditionalUNet(**MICRO_UNET, layout_size=4)
    assert net.unet.config.in_channels == 6
    x, t, cond = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.randn(2, 32)
    out = net(x, t, cond)
    out.sum().backward()
    assert net.unet.conv_in.weight.grad is not None
    assert all(p.grad is None for p in net.layout_head.parameters()), "the U-Net's input picture must be detached"
    with torch.no_grad():
        net.layout_head[-1].bias.add_(1.0)
        assert not torch.allclose(net(x, t, cond), out)

    stage = DiffusionStage(net, ImageEmbedding())
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    target, extra = stage.conditioning.target({"image": image}, cond, net)
    assert target is image
    cells = image.reshape(2, 3, 4, 8, 4, 8).mean(dim=(3, 5))
    torch.testing.assert_close(extra["layout"], (net.layout(cond) - cells).pow(2).mean(dim=(1, 2, 3)))
    net.zero_grad()
    stage.conditioning.stats_loaded = True
    stage.conditioning.mean_img.zero_(), stage.conditioning.std_img.fill_(1.0)
    losses = stage._losses({"image": image, "img_emb": cond}, 0.0)
    losses["loss"].mean().backward()
    assert net.layout_head[0].weight.grad.abs().sum() > 0, "the layout loss must be part of the total"
    with pytest.raises(ValueError, match="layout_size"):
        ConditionalUNet(**{**MICRO_UNET, "cond_dim": 0}, layout_size=4)


def test_sampling_with_a_bf16_network_stays_close_to_float32_and_is_not_the_same_run():
    """``precision="bf16-mixed"`` really runs the U-Net in bfloat16 (the images differ from float32's
    by rounding) and changes no more than rounding does (same seed, deterministic DDIM, guidance)."""
    stage = DiffusionStage(ConditionalUNet(**MICRO_UNET, learn_variance=True), ImageEmbedding()).eval()
    stage.conditioning.stats_loaded = True
    conditioning = torch.randn(3, 32)

    def draw(precision):
        return stage.sample(conditioning, steps=5, cfg_scale=3.0, progress=False, precision=precision,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip

    full, half = draw("32-true"), draw("bf16-mixed")
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert not torch.equal(full, half)
    assert (full - half).abs().mean() < 0.02 and torch.equal(draw("bf16-mixed"), half)


def test_embedding_token_unet_attends_to_tokens_projected_from_the_condition():
    """DALL-E 2's extra context tokens: the same call as ConditionalUNet; the tokens projected from
    the condition reach the output through cross-attention, apart from the pooled path."""
    net = EmbeddingTokenUNet(**MICRO_UNET, num_tokens=3)
    x, t, cond = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.randn(2, 32)
    out = net(x, t, cond)
    assert out.shape == (2, 6, 32, 32)
    with torch.no_grad():
        net.to_tokens.weight.zero_()  # every token now the bias alone; the pooled path unchanged
        same_tokens = net(x, t, cond)
        net.to_tokens.bias.add_(1.0)
        assert not torch.allclose(net(x, t, cond), same_tokens)
    assert not torch.allclose(out, same_tokens)
    with pytest.raises(ValueError, match=r"cond of shape \(batch, 32\)"):
        net(x, t, torch.randn(2, 16))


def test_decoder_with_embedding_tokens_fits_and_samples_through_the_cli(decoder, tmp_path):
    runs = tmp_path / "runs"
    args = decoder_args(decoder, runs)
    after_config = args.index("--trainer.logger.init_args.save_dir")  # the overlay's net sizes carry over
    args[after_config:after_config] = ["--model.init_args.net.class_path", "t2i_lightning.nn.embedding_token_unet.EmbeddingTokenUNet"]
    run(*args, "--model.init_args.net.init_args.num_tokens", "2", "--trainer.max_steps", "3")
    checkpoint = runs / "decoder" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert state["net.to_tokens.weight"].shape == (2 * 32, 32)
    out = tmp_path / "tokens.png"
    run(
        T2I, "sample", "--no-upsample", "--prompt", "a red circle", "--n", "2", "--steps", "3", "--decoder", str(checkpoint),
        "--translator", str(decoder["translator"]), "--out", str(out),
    )  # fmt: skip
    with Image.open(out) as image:
        assert image.size == (2 * 32, 32)


def test_sampling_benchmark_times_both_samplers_side_by_side(decoder):
    result = run(T2I, "bench", "sampling", "--decoder", str(decoder["decoder"]), "--n", "1",
                 "--ddim-steps", "2", "--ddpm-steps", "8")  # fmt: skip
    assert "DDIM-2" in result.stdout and "DDPM-8" in result.stdout and "x faster" in result.stdout


def test_the_same_command_run_again_resumes_with_optimizer_schedule_and_ema_state(decoder, tmp_path):
    """Re-running a finished 6-step fit for 8 steps resumes at step 6: Adam's step count, the
    learning-rate schedule and the EMA count continue from the checkpoint instead of restarting."""
    runs = tmp_path / "runs"
    shutil.copytree(decoder["decoder_runs"], runs)
    before = torch.load(runs / "decoder" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    result = run(*decoder_args(decoder, runs), "--trainer.max_steps", "8")
    assert f"Resuming from {runs / 'decoder' / 'checkpoints' / 'last.ckpt'} (step 6)" in result.stderr
    after = torch.load(runs / "decoder" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["global_step"] == 8
    assert int(after["optimizer_states"][0]["state"][0]["step"]) == 8
    assert after["lr_schedulers"][0]["last_epoch"] == 8
    assert int(after["averaging_state"]["n_averaged"]) == int(before["averaging_state"]["n_averaged"]) + 2


def test_bf16_mixed_training_keeps_float32_weights_and_finite_losses(decoder, tmp_path):
    """The Makefile's default precision on CPUs with native bf16: autocast in the forward passes only;
    the checkpoint's (EMA and raw) weights stay float32 and the losses are finite."""
    runs = tmp_path / "runs"
    run(*decoder_args(decoder, runs), "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "3")
    checkpoint = torch.load(runs / "decoder" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    for weights in (checkpoint["state_dict"], checkpoint["current_model_state"]):
        assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    logged = scalars(runs / "decoder")
    assert all(np.isfinite(logged["train/loss"])) and np.isfinite(logged["val/loss"][-1])


def test_evaluate_decoder_scores_reconstructions_per_guidance_scale(decoder, tmp_path):
    """`t2i evaluate-decoder` takes the embeddings the decoder was trained with, decodes the first
    validation images at each scale and writes the scores, with object scores on shapes, and grids."""
    out = tmp_path / "recon.json"
    result = run(T2I, "evaluate-decoder", "--decoder", str(decoder["decoder"]), "--data", str(decoder["data"]),
                 "--n", "4", "--cfg", "1", "3", "--steps", "2", "--batch-size", "3", "--precision", "bf16-mixed",
                 "--out", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    assert report["images"] == 4 and report["embeddings"] == str(decoder["emb"]) and report["steps"] == 2
    assert report["precision"] == "bf16-mixed" and "U-Net bf16-mixed" in result.stdout
    rows = report["rows"]
    assert [row["cfg"] for row in rows] == [1.0, 3.0]
    for row in rows:
        assert row["matched"] > 0 and row["random_pairs"] > 0
        assert row["ratio"] == pytest.approx(row["matched"] / row["random_pairs"])
        assert row["objects"] >= 4 and 0 <= row["object_colour_hits"] <= 1 and 0 <= row["object_colour_near"] <= 1
    assert rows[0]["matched"] != rows[1]["matched"]  # guidance changes the images
    for scale in ("1", "3"):
        with Image.open(tmp_path / f"recon-cfg{scale}.png") as grid:
            assert grid.width >= 4 * 64
    assert "hits" in result.stdout and "present" in result.stdout
    nearest = report["nearest_training_image"]  # the reference row: real training images, drawn perfectly
    assert len(nearest["keys"]) == 4 and nearest["objects"] == rows[0]["objects"] and 0 <= nearest["ratio"]
    assert "NN" in result.stdout and (tmp_path / "recon-nearest.png").exists()
    result = run(T2I, "evaluate-decoder", "--decoder", str(decoder["decoder"]), "--data", str(decoder["data"]), "--n",
                 "2", "--cfg", "1", "--steps", "1", "--no-nearest", "--out", str(tmp_path / "bare.json"))  # fmt: skip
    assert "nearest_training_image" not in json.loads((tmp_path / "bare.json").read_text()) and "NN" not in result.stdout


def test_nearest_training_image_is_the_training_sample_with_the_closest_embedding(decoder, tmp_path):
    """Queried with a training image's own embedding (scaled: the search is by cosine), the reference
    returns that sample's image; an embedding directory without a train split is refused, not
    searched among the sources' own embeddings."""
    emb = decoder["emb"]
    keys, bank = split_image_embeddings(emb, "train")
    picks = [3, len(keys) - 1]
    images, found = nearest_training_images(emb, 2.5 * bank[picks], 64)
    assert found == [keys[i] for i in picks]
    sources = {s["__key__"]: s for shard in resolve_shards(str(decoder["data"]), "train") for s in read_samples(shard)}
    for image, key in zip(images, found, strict=True):
        assert torch.equal(image, decode_image_caption(sources[key], 64)["image"])
    only_val = tmp_path / "emb"
    only_val.mkdir()
    for path in [*emb.glob("val-*.tar"), emb / "stats.json"]:
        shutil.copy(path, only_val)
    with pytest.raises(ValueError, match="no train split"):
        nearest_training_images(only_val, bank[:1], 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "1"], "--n must be at least 2"),
        (["--steps", "x"], "--steps must be a positive integer"),
        (["--decoder", "nowhere/last.ckpt"], "make train-decoder"),
    ],
)
def test_evaluate_decoder_rejects_bad_input_clearly(decoder, tmp_path, args, message):
    out = tmp_path / "recon.json"
    result = run(T2I, "evaluate-decoder", "--decoder", str(decoder["decoder"]), *args, "--out", str(out), check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_make_samples_and_evaluates_at_the_precision_it_is_given():
    """`make sample`, `demo-samples`, `evaluate-decoder` and `evaluate` pass --precision PRECISION: `auto`
    by default, which the commands resolve in Python (test_architecture.py), or the user's choice."""
    import re

    def precisions(*variables):
        out = make_dry_run("sample", "demo-samples", "evaluate-decoder", "evaluate-upsampler", "evaluate",
                           "RUNS=/nonexistent", "DATA=/nonexistent", *variables)  # fmt: skip
        lines = [line for line in out if re.search(r"t2i (sample|evaluate-decoder|evaluate-upsampler|evaluate) ", line)]
        return [re.search(r"--precision (\S+)", line).group(1) for line in lines]

    assert precisions("PRECISION=bf16-mixed") == ["bf16-mixed"] * 5
    assert precisions("PRECISION=32-true") == ["32-true"] * 5
    assert precisions() == ["auto"] * 5
