"""CLIP space: the CLIP stage, embedding extraction into mirrored shards, the translator, and the
text-to-image-embedding chain, run through the real CLI with the micro CLIP config."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i_lightning.data.embeddings import IMAGE_MEMBER, TEXT_MEMBER, load_npy
from t2i_lightning.data.inspect import read_samples
from t2i_lightning.data.shards import resolve_shards, write_shard
from t2i_lightning.nn.clip import PretrainedWeightsError, create_clip

from .cli_runs import MICRO, T2I, assert_stats_equal_numpy, clip_fit_args, extract, run, scalars


def dir_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_clip_fit_lowers_the_loss_and_logs_retrieval_and_zero_shot(pipeline):
    logged = scalars(pipeline["runs"] / "clip")
    loss = logged["train/loss"]
    assert np.mean(loss[-5:]) < np.mean(loss[:5]) - 0.1
    for tag in ("val/t2i_R@1", "val/t2i_R@5", "val/i2t_R@1", "val/i2t_R@5", "val/pair_cosine",
                "val/zeroshot_colour_acc", "val/zeroshot_shape_acc", "train/temperature",
                "val/word_loss_image", "val/word_loss_text"):  # fmt: skip
        assert tag in logged, tag
    for side in ("image", "text"):  # stages/clip.yaml's caption-word loss is trained too
        words = logged[f"train/word_loss_{side}"]
        assert np.mean(words[-5:]) < np.mean(words[:5]) - 0.1, side
    assert 0 <= logged["val/t2i_R@1"][-1] <= logged["val/t2i_R@5"][-1] <= 1


def test_bf16_mixed_clip_training_keeps_float32_weights_and_finite_losses(shapes_dir, tmp_path):
    """`make clip`'s precision on CPUs with native bf16: autocast in the forward passes only; the
    checkpoint's weights (those extraction loads) stay float32 and the losses are finite."""
    runs = tmp_path / "runs"
    run(*clip_fit_args(runs, shapes_dir, 3), "--trainer.precision", "bf16-mixed")
    checkpoint = torch.load(runs / "clip" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    weights = checkpoint["state_dict"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    logged = scalars(runs / "clip")
    for tag in ("train/loss", "train/word_loss_image", "val/loss", "val/t2i_R@1"):
        assert np.all(np.isfinite(logged[tag])), tag


def test_local_weights_files_load_as_pretrained(pipeline, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    from_stage = create_clip(MICRO, str(pipeline["clip"]))
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage() or "No pretrained" in r.getMessage()]
    create_clip(MICRO)  # a new CLIP to train is random, and says so
    assert any("initialized randomly" in r.getMessage() for r in caplog.records)
    state = torch.load(pipeline["clip"], map_location="cpu", weights_only=True)["state_dict"]
    for name, weight in from_stage.state_dict().items():  # the CNN tower's and the text tower's weights
        assert torch.equal(weight, state[f"clip.{name}"]), name
    plain = tmp_path / "open_clip_micro.pt"
    torch.save(from_stage.state_dict(), plain)
    from_file = create_clip(MICRO, str(plain))
    for (name, a), (_, b) in zip(
        from_stage.state_dict().items(), from_file.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_clip(MICRO, str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match=f"holds a {MICRO} CLIP, not shapes-vitc-micro"):
        create_clip("shapes-vitc-micro", str(pipeline["clip"]))


def test_unavailable_pretrained_tag_fails_clearly():
    code = (
        "from t2i_lightning.nn.clip import create_clip\n"
        "try:\n    create_clip('ViT-B-32', 'laion2b_s34b_b79k')\n"
        "except Exception as e:\n    print(type(e).__name__, '|', e)\n"
    )
    result = run(sys.executable, "-c", code, env={"HF_HUB_OFFLINE": "1"})
    assert result.stdout.startswith("PretrainedWeightsError")
    assert "huggingface" in result.stdout and "pretrained" in result.stdout
    with pytest.raises(ValueError, match="no pretrained tag"):
        create_clip("ViT-B-32", "not-a-tag")


def test_embedding_shards_mirror_the_image_shards(pipeline):
    data, emb = pipeline["data"], pipeline["emb"]
    sources = resolve_shards(str(data))
    assert sorted(p.name for p in emb.glob("*.tar")) == sorted(Path(s).name for s in sources)
    total = 0
    for source in sources:
        source_keys = [s["__key__"] for s in read_samples(source)]
        with tarfile.open(emb / Path(source).name) as tar:
            names = tar.getnames()
        assert names == [f"{k}.{m}" for k in source_keys for m in (IMAGE_MEMBER, TEXT_MEMBER)]
        total += len(source_keys)
    stats = json.loads((emb / "stats.json").read_text())
    assert stats["count"] == stats["source_count"] == total and stats["dim"] == 32
    assert stats["model"] == MICRO and len(stats["checkpoint_sha256"]) == 64


def test_stats_equal_numpy_on_the_written_arrays(pipeline):
    assert_stats_equal_numpy(pipeline["emb"])


def test_shard_moments_combine_to_the_moments_of_all_rows():
    from t2i_lightning.data.embeddings import Moments

    rng = np.random.default_rng(0)
    rows = (rng.normal(0.3, 0.05, (257, 6)) + rng.normal(0, 1, 6)).astype(np.float16)
    parts = [rows[:1], rows[1:1], rows[1:100], rows[100:]]  # one row, none, and uneven shards
    total = Moments.empty()
    for part in parts:
        total = total + Moments.of(part)
    mean, std = total.mean_std()
    assert total.count == 257
    np.testing.assert_allclose(mean, rows.astype(np.float64).mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, rows.astype(np.float64).std(0), rtol=0, atol=1e-12)
    again = Moments.empty()
    for part in parts:
        again = again + Moments.of(part.copy())
    assert again.mean.tobytes() == total.mean.tobytes() and again.m2.tobytes() == total.m2.tobytes()


def test_killed_extraction_resumes_to_identical_bytes(pipeline, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for shard in resolve_shards(str(pipeline["data"])):
        shutil.copy(shard, data)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    extract(pipeline["clip"], data, reference)
    process = extract(pipeline["clip"], data, killed, popen=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(killed.glob("*.tar")) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(killed.glob("*.tar")))
    assert 0 < written < len(list(reference.glob("*.tar"))), "the kill did not land mid-extraction"
    assert not (killed / "stats.json").exists()
    extract(pipeline["clip"], data, killed)
    assert dir_bytes(killed) == dir_bytes(reference)


def test_images_reimported_in_place_are_extracted_again_and_stale_embeddings_refused(pipeline, tmp_path):
    """A re-import with other options used to leave 'N of N shards already done' and the old embeddings,
    which the decoder then joined to the new images by key."""
    from t2i_lightning.data.decode import ShardMismatchError
    from t2i_lightning.data.joined import EmbeddingLookup

    data = tmp_path / "data"
    data.mkdir()
    sources = resolve_shards(str(pipeline["data"]), "val")
    for shard in sources:
        shutil.copy(shard, data / Path(shard).name)
    out, fresh = tmp_path / "emb", tmp_path / "fresh"
    extract(pipeline["clip"], data, out)
    changed = data / Path(sources[0]).name
    samples = read_samples(str(changed))
    write_shard(changed, samples[::-1])  # the same images in another order, as a re-import may write them
    key = samples[0]["__key__"]
    with pytest.raises(ShardMismatchError, match=f"extracted from another version of {changed}.*make embed"):
        EmbeddingLookup(out)(str(changed), key)
    again = extract(pipeline["clip"], data, out)
    assert "1 image shard(s) changed since their embeddings were extracted" in again.stdout
    assert f"{len(sources) - 1} of {len(sources)} shards already done" in again.stdout
    extract(pipeline["clip"], data, fresh)
    assert dir_bytes(out) == dir_bytes(fresh)  # the changed shard's embeddings are the new images
    assert EmbeddingLookup(out)(str(changed), key)[0].shape == (32,)


def test_corrupt_source_sample_is_skipped_on_both_sides(pipeline, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sources = resolve_shards(str(pipeline["data"]), "val")
    shutil.copy(sources[0], data / Path(sources[0]).name)
    samples = read_samples(sources[0])
    bad_key = samples[3]["__key__"]
    samples[3]["png"] = b"not an image"
    write_shard(data / Path(sources[0]).name, samples)
    out = tmp_path / "emb"
    for attempt in range(2):
        if attempt:
            shutil.rmtree(out)
        extract(pipeline["clip"], data, out)
        keys = [s["__key__"] for s in read_samples(str(out / Path(sources[0]).name))]
        assert bad_key not in keys and keys == [s["__key__"] for s in samples if s["__key__"] != bad_key]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["count"] == len(samples) - 1


def test_extraction_refuses_another_clips_directory(pipeline, tmp_path):
    out = tmp_path / "emb"
    shutil.copytree(pipeline["emb"], out)
    moved = tmp_path / "moved" / "clip.ckpt"  # the same CLIP file elsewhere is the same CLIP
    moved.parent.mkdir()
    shutil.copy(pipeline["clip"], moved)
    assert "already done" in extract(moved, pipeline["data"], out).stdout
    other = tmp_path / "other.pt"
    torch.save(create_clip(MICRO).state_dict(), other)
    args = [
        T2I, "predict", "--config", "stages/embed.yaml", "--model.init_args.model_name", MICRO,
        "--model.init_args.pretrained", str(other), "--model.init_args.out", str(out),
        "--data.init_args.predict", str(pipeline["data"]), "--data.init_args.num_workers", "0",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    result = run(*args, check=False)
    assert result.returncode != 0 and "another CLIP" in result.stderr
    run(*args, "--model.init_args.replace_other_clip", "true")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["pretrained"] == str(other)


def test_a_translator_run_shorter_than_an_epoch_writes_a_checkpoint_and_resumes_to_more_steps(pipeline, tmp_path):
    """EarlyStopping checks after validations only: a run that max_steps ends part way through an epoch
    (no val/mse then) used to raise there and write nothing, and every resume with more steps did too."""
    emb, runs = pipeline["emb"], tmp_path / "runs"
    args = [T2I, "fit", "--config", "stages/translator.yaml", "--config", "stages/tiny/translator.yaml",
            "--trainer.logger.init_args.save_dir", str(runs), "--model.init_args.stats", str(emb / "stats.json"),
            "--data.init_args.train", str(emb), "--data.init_args.val", str(emb)]  # fmt: skip
    for steps in (2, 5):
        result = run(*args, "--trainer.max_steps", str(steps))
        last = torch.load(runs / "translator" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["global_step"] == steps and "Traceback" not in result.stderr
    assert "Resuming from" in result.stderr + result.stdout


def test_translator_beats_the_identity_baseline(pipeline):
    logged = scalars(pipeline["runs"] / "translator")
    assert logged["val/mse"][-1] < min(logged["val/identity_mse"][-1], logged["val/identity_mse_standardised"][-1])
    assert "val/R@1" in logged and "val/cosine" in logged


def test_translator_checkpoint_and_clip_reproduce_the_training_embeddings(pipeline):
    from t2i_lightning.pipeline import TextToImageEmbedding
    from t2i_lightning.stages.translator import TranslatorStage

    chain = TextToImageEmbedding.from_checkpoints(str(pipeline["translator"]), str(pipeline["clip"]))
    stats = json.loads((pipeline["emb"] / "stats.json").read_text())
    assert torch.allclose(chain.translator.mean_img, torch.tensor(stats["mean_img"], dtype=torch.float32))
    val = resolve_shards(str(pipeline["emb"]), "val")[0]
    emb_samples = read_samples(val)[:8]
    captions = {
        s["__key__"]: s["txt"].decode() for s in read_samples(resolve_shards(str(pipeline["data"]), "val")[0])
    }
    texts = [captions[s["__key__"]] for s in emb_samples]
    stored_txt = torch.from_numpy(
        np.stack([load_npy(s[TEXT_MEMBER]) for s in emb_samples]).astype(np.float32)
    )
    recomputed_txt = chain.text_embeddings(texts)
    assert torch.allclose(recomputed_txt, stored_txt, atol=2e-2, rtol=1e-2)  # float16 storage
    fresh = TranslatorStage(
        chain.translator.net.__class__(32, 32, 64, 2), stats=str(pipeline["emb"] / "stats.json")
    )
    state = torch.load(pipeline["translator"], map_location="cpu", weights_only=False)["state_dict"]
    fresh.load_state_dict(state)
    fresh.eval()
    assert torch.allclose(chain(texts), fresh(recomputed_txt), atol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        chain(["  "])


def test_embed_text_prints_neighbours(pipeline):
    result = run(T2I, "embed-text", "a red circle", "--translator", str(pipeline["translator"]),
                 "--clip", str(pipeline["clip"]), "--emb", str(pipeline["emb"]), "--k", "3")  # fmt: skip
    assert "norm" in result.stdout and result.stdout.count("val_") == 3


def test_probe_layout_scores_the_embeddings_against_the_blind_baseline(pipeline, tmp_path):
    out = tmp_path / "probe.json"
    result = run(T2I, "probe-layout", "--emb", str(pipeline["emb"]), "--steps", "20", "--out", str(out))
    scores = json.loads(out.read_text())
    names = ("occupancy", "slot_occupied", "colour_occupied", "background")
    assert all(0 <= scores[n] <= 1 and 0 <= scores[f"{n}_baseline"] <= 1 for n in names)
    assert all(n in result.stdout for n in names)


def test_missing_checkpoints_name_the_make_target(tmp_path):
    result = run(T2I, "embed-text", "a red circle", "--translator", str(tmp_path / "none.ckpt"), check=False)
    assert result.returncode != 0 and "make train-translator" in result.stderr


def test_conv_stem_patch_embedding_keeps_the_token_grid():
    from timm.layers import PatchEmbed

    from t2i_lightning.nn.conv_stem_vit import ConvStemPatchEmbed

    x = torch.randn(2, 3, 64, 64)
    plain = PatchEmbed(img_size=64, patch_size=8, in_chans=3, embed_dim=48)
    stem = ConvStemPatchEmbed(img_size=64, patch_size=8, in_chans=3, embed_dim=48, stem_channels=16)
    assert stem(x).shape == plain(x).shape == (2, 64, 48)
    convs = [m for m in stem.proj if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)] and [c.out_channels for c in convs] == [16, 32, 64, 48]
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStemPatchEmbed(img_size=60, patch_size=6, in_chans=3, embed_dim=48)
    clip = create_clip("shapes-vitc-micro")
    assert clip.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    with pytest.raises(ValueError, match="trained by the project"):
        import timm

        timm.create_model("shapes_vitc_micro", pretrained=True)


def test_caption_word_targets_are_each_captions_distinct_words():
    from t2i_lightning.nn.caption_words import CaptionWordHead
    from t2i_lightning.nn.clip import tokenizer_for

    tokenizer = tokenizer_for(MICRO)
    specials = [0, tokenizer.sot_token_id, tokenizer.eot_token_id]
    head = CaptionWordHead(8, 49408, specials)
    tokens = tokenizer(["a red circle and a red square", "a star"])
    targets = head.targets(tokens)
    for row, caption in zip(targets, ["a red circle and a red square", "a star"], strict=True):
        words = set(tokenizer.encode(caption))  # "a" and "red" repeated: each counted once
        assert set(row.nonzero().flatten().tolist()) == words
        assert torch.allclose(row[sorted(words)], torch.full((len(words),), 1.0 / len(words)))
    features = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    log_p = torch.log_softmax(head.proj(features * 8**0.5), dim=1)
    assert torch.allclose(head.loss(features, targets), -(targets * log_p).sum(1).mean())
    with pytest.raises(ValueError, match="no word tokens"):
        head.targets(tokenizer([""]))


def test_cnn_image_tower_is_an_open_clip_timm_tower():
    import timm

    from t2i_lightning.nn.cnn_tower import CNNImageTower

    clip = create_clip("shapes-cnn-micro")
    assert isinstance(clip.visual.trunk, CNNImageTower)
    assert clip.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    assert clip.visual.trunk.pool.pos_embed.shape[0] == 8 * 8 + 1  # each cell of the 8x8 map and the pooled token
    with pytest.raises(ValueError, match="trained by the project"):
        timm.create_model("shapes_cnn_micro", pretrained=True)
    with pytest.raises(ValueError, match="RGB"):
        timm.create_model("shapes_cnn_micro", in_chans=1)


@pytest.mark.parametrize("model_size", [32, 224])
def test_batched_preprocess_equals_clips_own_preprocessing_bit_for_bit(model_size):
    import open_clip
    from PIL import Image

    from t2i_lightning.nn.clip import BatchedPreprocess

    preprocess = open_clip.image_transform(model_size, is_train=False)
    split = BatchedPreprocess(preprocess)
    rng = np.random.default_rng(0)
    images = [  # upscaled, downscaled, non-square (centre-cropped), and already the model's size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((17, 17), (256, 256), (300, 200), (model_size, model_size))
    ]
    parts = [split.image(image) for image in images]
    assert all(p.dtype == torch.uint8 for p in parts)  # the workers hand over bytes, not floats
    batched = split.batch(torch.stack(parts))
    whole = torch.stack([preprocess(image) for image in images])
    assert batched.dtype == whole.dtype == torch.float32 and torch.equal(batched, whole)


def test_batched_preprocess_runs_other_pipelines_whole():
    from PIL import Image
    from torchvision import transforms

    from t2i_lightning.nn.clip import BatchedPreprocess

    image = Image.new("RGB", (16, 16), (255, 0, 0))
    for custom in (  # no Normalize to move; a pipeline that keeps bytes
        transforms.Compose([transforms.Resize(8), transforms.ToTensor()]),
        transforms.Compose([transforms.Resize(8), transforms.PILToTensor()]),
    ):
        split = BatchedPreprocess(custom)
        batch = torch.stack([split.image(image)])
        assert torch.equal(split.batch(batch), torch.stack([custom(image)]))
