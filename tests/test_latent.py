"""The latent route: the autoencoder stage, latent extraction that mirrors the image shards, and the latent
decoders trained and sampled through the real CLI (tiny overlays in stages/tiny/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i_lightning.data.embeddings import load_npy
from t2i_lightning.data.inspect import read_samples
from t2i_lightning.data.latents import LATENT_MEMBER
from t2i_lightning.diffusion import normal_kl
from t2i_lightning.nn.autoencoder import KLAutoencoder
from t2i_lightning.stages.autoencoder import AutoencoderStage, gradient_difference

from .cli_runs import MICRO, ROOT, T2I, run


def autoencoder_fit_args(runs: Path, data: Path, *extra: str) -> list[str]:
    return [
        T2I, "fit", "--config", "stages/autoencoder.yaml", "--config", "stages/tiny/autoencoder.yaml",
        "--trainer.logger.init_args.save_dir", str(runs), "--data.init_args.train", str(data),
        "--data.init_args.val", str(data), *extra,
    ]  # fmt: skip


def encode_args(autoencoder: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        T2I, "predict", "--config", "stages/encode_latents.yaml", "--config", "stages/tiny/encode_latents.yaml",
        "--model.init_args.autoencoder", str(autoencoder), "--model.init_args.out", str(out),
        "--data.init_args.predict", str(data), "--trainer.default_root_dir", str(out.parent), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def latents(pipeline, tmp_path_factory):
    """A micro autoencoder fitted through the CLI and the latents of the shapes fixture it encodes."""
    root = tmp_path_factory.mktemp("latent")
    run(*autoencoder_fit_args(root / "runs", pipeline["data"]))
    autoencoder = root / "runs" / "autoencoder" / "checkpoints" / "last.ckpt"
    run(*encode_args(autoencoder, pipeline["data"], root / "latents"))
    return {**pipeline, "autoencoder": autoencoder, "latents": root / "latents", "root": root}


def test_autoencoder_latents_have_the_factors_shape_and_the_kl_is_its_closed_form():
    net = KLAutoencoder(image_size=32, channels=(8, 16, 16), latent_channels=4, norm_groups=8)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    mean, logvar = net.encode(images)
    assert mean.shape == logvar.shape == (3, 4, 8, 8) and net.factor == 4 and net.decode(mean).shape == (3, 3, 32, 32)
    # KL(N(m, e^lv) || N(0, 1)) = ½ (m² + e^lv − 1 − lv), per value
    m, lv = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.0, 0.5, -1.0])
    closed = 0.5 * (m**2 + lv.exp() - 1 - lv)
    assert torch.allclose(normal_kl(m, lv, torch.zeros(()), torch.zeros(())), closed)
    stage = AutoencoderStage(net, kl_weight=1.0)
    torch.manual_seed(0)
    losses = stage.losses(images)
    expected_kl = (0.5 * (mean**2 + logvar.exp() - 1 - logvar)).flatten(1).sum(1)
    assert torch.allclose(losses["kl"], expected_kl, rtol=1e-4)
    values = 3 * 32 * 32
    assert torch.allclose(losses["loss"], losses["reconstruction"] + expected_kl / values, rtol=1e-4)


def test_the_autoencoders_edge_term_is_the_error_of_the_images_gradients_added_with_its_weight():
    # An error the same everywhere has no gradient; a spike h at an interior pixel differs from its four
    # neighbours (4 h^p), at a corner from its two (2 h^p).
    assert gradient_difference(torch.full((1, 3, 6, 6), 0.5), 2).item() == 0
    spikes = torch.zeros(2, 1, 5, 5)
    spikes[0, 0, 2, 2] = spikes[1, 0, 0, 0] = -0.5
    assert torch.allclose(gradient_difference(spikes, 2), torch.tensor([4 * 0.25, 2 * 0.25]))
    assert torch.allclose(gradient_difference(spikes, 1), torch.tensor([4 * 0.5, 2 * 0.5]))
    net = KLAutoencoder(image_size=32, channels=(8, 16), latent_channels=4, norm_groups=8)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.manual_seed(0)
    plain = AutoencoderStage(net, reconstruction="l2").losses(images)
    torch.manual_seed(0)
    edged = AutoencoderStage(net, reconstruction="l2", edge_weight=2.0).losses(images)
    assert "edges" not in plain and torch.allclose(edged["reconstruction"], plain["reconstruction"])
    assert (edged["edges"] > 0).all() and torch.allclose(edged["loss"], plain["loss"] + 2.0 * edged["edges"])
    with pytest.raises(ValueError, match="edge_weight must be >= 0"):
        AutoencoderStage(net, edge_weight=-1.0)


def test_latents_mirror_the_image_shards_key_for_key_with_the_scale_factor_of_what_was_written(latents):
    data, out = latents["data"], latents["latents"]
    stats = json.loads((out / "stats.json").read_text())
    values = []
    for image_shard in sorted(data.glob("*.tar")):
        image_keys = [s["__key__"] for s in read_samples(str(image_shard))]
        latent_samples = read_samples(str(out / image_shard.name))
        assert [s["__key__"] for s in latent_samples] == image_keys
        values += [load_npy(s[LATENT_MEMBER]).astype(np.float64) for s in latent_samples]
    stacked = np.stack(values)
    assert list(stacked.shape[1:]) == stats["shape"] == [4, 8, 8] and stats["count"] == len(values)
    assert stats["scale_factor"] == pytest.approx(1 / stacked.std(), rel=1e-6)
    assert stats["autoencoder_digest"] and stats["factor"] == 4


def test_latent_extraction_resumes_byte_identical_after_a_kill_and_refuses_another_autoencoder(latents, tmp_path):
    out = tmp_path / "latents"
    process = subprocess.Popen(encode_args(latents["autoencoder"], latents["data"], out), cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.glob("*.tar")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    run(*encode_args(latents["autoencoder"], latents["data"], out))
    for shard in sorted(latents["latents"].glob("*.tar")):
        assert (out / shard.name).read_bytes() == shard.read_bytes(), shard.name
    assert (out / "stats.json").read_text() == (latents["latents"] / "stats.json").read_text().replace(
        str(latents["latents"]), str(out))  # fmt: skip
    other = latents["root"] / "other"
    run(*autoencoder_fit_args(other, latents["data"], "--seed_everything", "1"))
    refused = run(*encode_args(other / "autoencoder" / "checkpoints" / "last.ckpt", latents["data"], out), check=False)
    assert refused.returncode != 0 and "holds latents of another autoencoder" in refused.stderr
    assert "replace_other_autoencoder" in refused.stderr


def latent_decoder_args(latents: dict, runs: Path, *extra: str) -> list[str]:
    return [
        T2I, "fit", "--config", "stages/decoder_latent.yaml", "--config", "stages/tiny/decoder_latent.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.conditioning.init_args.stats", str(latents["emb"] / "stats.json"),
        "--model.init_args.space.init_args.stats", str(latents["latents"] / "stats.json"),
        "--model.init_args.space.init_args.autoencoder", str(latents["autoencoder"]),
        "--model.init_args.samples.init_args.translator", str(latents["translator"]),
        "--data.init_args.latents", str(latents["latents"]), "--data.init_args.embeddings", str(latents["emb"]),
        "--data.init_args.train", str(latents["data"]), "--data.init_args.val", str(latents["data"]), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def latent_decoders(latents, tmp_path_factory):
    """The micro unCLIP and text-conditioned latent decoders fitted through `t2i fit` with their tiny overlays."""
    runs = tmp_path_factory.mktemp("latent_decoders")
    run(*latent_decoder_args(latents, runs))
    run(
        T2I, "fit", "--config", "stages/decoder_text_latent.yaml", "--config", "stages/tiny/decoder_text_latent.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.conditioning.init_args.text_encoder.init_args.pretrained", str(latents["clip"]),
        "--model.init_args.space.init_args.stats", str(latents["latents"] / "stats.json"),
        "--model.init_args.space.init_args.autoencoder", str(latents["autoencoder"]),
        "--data.init_args.latents", str(latents["latents"]), "--data.init_args.train", str(latents["data"]),
        "--data.init_args.val", str(latents["data"]),
    )  # fmt: skip
    return {**latents, "runs": runs, "decoder_latent": runs / "decoder_latent" / "checkpoints" / "last.ckpt",
            "decoder_text_latent": runs / "decoder_text_latent" / "checkpoints" / "last.ckpt"}  # fmt: skip


@pytest.mark.parametrize("key", ["decoder_latent", "decoder_text_latent"])
def test_a_latent_decoder_trains_samples_and_decodes_to_images_through_the_cli(latent_decoders, key, tmp_path):
    checkpoint = latent_decoders[key]
    grids = sorted((latent_decoders["runs"] / key / "samples").glob("step-*.png"))
    assert checkpoint.is_file() and grids
    out = tmp_path / "sample.png"
    chain = ["--translator", str(latent_decoders["translator"]), "--clip", str(latent_decoders["clip"])] \
        if key == "decoder_latent" else []  # a text-conditioned decoder takes the caption itself  # fmt: skip
    run(T2I, "sample", "--prompt", "a red circle", "--n", "2", "--steps", "3", "--no-upsample", "--decoder", str(checkpoint),
        *chain, "--out", str(out))  # fmt: skip
    from PIL import Image

    assert Image.open(out).size == (64, 32)  # two 32px images decoded from 8 x 8 x 4 latents


def test_image_guidance_pulls_a_latent_sample_towards_the_latents_of_its_image(latent_decoders, tmp_path):
    """`t2i sample --image-guidance` with a latent decoder encodes the image into the latents it pulls towards
    (a pixel image would not even have the latents' channels): strong guidance lands near the autoencoder's
    reconstruction of the image (the micro autoencoder's is far from the image itself)."""
    from PIL import Image

    from t2i_lightning.training.stage_loading import load_frozen_stage

    base = tmp_path / "blue.png"
    Image.new("RGB", (32, 32), (20, 40, 230)).save(base)
    autoencoder = load_frozen_stage(str(latent_decoders["autoencoder"]), "autoencoder")
    pixels = torch.tensor([20.0, 40.0, 230.0]).div(127.5).sub(1).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    target = (autoencoder.reconstruct(pixels)[0].permute(1, 2, 0).numpy() + 1) * 127.5
    chain = ["--decoder", str(latent_decoders["decoder_latent"]), "--translator", str(latent_decoders["translator"]),
             "--clip", str(latent_decoders["clip"])]  # fmt: skip

    def distance_to_target(*guidance: str) -> float:
        out = tmp_path / f"sample{len(guidance)}.png"
        run(T2I, "sample", "--prompt", "a red circle", "--n", "2", "--steps", "4", "--no-upsample", *chain, *guidance,
            "--out", str(out))  # fmt: skip
        drawn = np.asarray(Image.open(out), dtype=np.float64)
        assert drawn.shape == (32, 64, 3)  # images at the decoded size, not the latents'
        return float(np.abs(drawn - np.concatenate([target, target], axis=1)).mean())

    assert distance_to_target("--image-guidance", str(base), "--ig-scale", "1") < 0.75 * distance_to_target()


def test_sample_defaults_to_the_latent_unclip_decoder_and_names_its_make_target(tmp_path):
    """The demo's main route is `t2i sample`'s default; missing, the error names the target that trains it."""
    result = subprocess.run([T2I, "sample", "--prompt", "a red circle", "--no-upsample", "--out", "x.png"], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode != 0 and "runs/decoder_latent/checkpoints/last.ckpt" in result.stderr
    assert "make train-decoder-latent" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_draws_the_latent_rows_beside_the_pixel_ones(latent_decoders, judge_run, tmp_path):
    out = tmp_path / "eval"
    run(
        T2I, "evaluate", "--config", "stages/evaluate.yaml", "--data", str(latent_decoders["data"]),
        "--embeddings", str(latent_decoders["emb"]), "--n", "4", "--seeds", "0", "--subset-sizes", "4",
        "--variants", "full_latent", "decoder_only_latent", "no_translator_latent", "text_decoder_latent", "text_decoder",
        "autoencoder", "--autoencoder", str(latent_decoders["autoencoder"]),
        "--clip", str(latent_decoders["clip"]), "--clip-model", MICRO, "--translator", str(latent_decoders["translator"]),
        "--decoder-latent", str(latent_decoders["decoder_latent"]),
        "--decoder-text-latent", str(latent_decoders["decoder_text_latent"]), "--decoder-text", str(tmp_path / "none.ckpt"),
        "--judge", str(judge_run / "judge" / "checkpoints" / "last.ckpt"),
        "--steps", "2", "--batch-size", "4", "--precision", "32-true", "--out", str(out),
    )  # fmt: skip
    rows = {row["variant"]: row for row in json.loads((out / "table.json").read_text())["rows"]}
    drawn = ("full_latent", "decoder_only_latent", "no_translator_latent", "text_decoder_latent", "autoencoder")
    for name in drawn:
        assert "skipped" not in rows[name] and np.isfinite(rows[name]["metrics"]["judge_fd"]["mean"]), rows[name]
        assert (out / "grids" / f"{name}.png").is_file()
    assert "psnr" in rows["decoder_only_latent"]["metrics"] and "psnr" not in rows["full_latent"]["metrics"]
    assert "make train-decoder-text" in rows["text_decoder"]["skipped"]
    # the autoencoder's reconstructions are the latent rows' ceiling: nearer their references than any draw
    assert rows["autoencoder"]["metrics"]["psnr"]["mean"] > rows["decoder_only_latent"]["metrics"]["psnr"]["mean"]


def test_latent_route_errors_name_the_path_and_the_make_target(latents, tmp_path):
    missing = run(*latent_decoder_args({**latents, "latents": tmp_path / "nowhere"}, tmp_path / "runs"), check=False)
    assert missing.returncode != 0 and "nowhere" in missing.stderr and "make encode-latents" in missing.stderr
    wrong = run(*latent_decoder_args(latents, tmp_path / "runs", "--model.init_args.net.init_args.in_channels", "3"),
                check=False)  # fmt: skip
    assert wrong.returncode != 0 and "--model.init_args.net.init_args.in_channels 4" in wrong.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    refused = run(*encode_args(bad, latents["data"], tmp_path / "out"), check=False)
    assert refused.returncode != 0 and f"{bad} is not a readable checkpoint" in refused.stderr
    gone = run(*encode_args(tmp_path / "none.ckpt", latents["data"], tmp_path / "out"), check=False)
    assert gone.returncode != 0 and "make train-autoencoder" in gone.stderr
