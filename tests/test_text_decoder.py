"""The Imagen-like decoder: `stages/decoder_text.yaml` end to end through the real CLI (a micro U-Net
on the micro CLIP's text tokens; the session's micro CLIP, no embeddings or translator needed),
`t2i sample` with it, the attention mask, the null condition, and the frozen text encoders (the
open_clip tower and a tiny T5 built offline)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from PIL import Image

from t2i_lightning.cli import main
from t2i_lightning.nn.text_encoder import OpenClipTextTokens, T5TokenEncoder
from t2i_lightning.nn.text_unet import TextConditionalUNet
from t2i_lightning.stages.diffusion import DiffusionStage
from t2i_lightning.stages.text_tokens import TextTokens

from .cli_runs import MICRO, T2I, run

MICRO_TEXT_UNET = dict(
    image_size=32, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
    head_channels=16, groups=8, token_dim=32, pooled_dim=32,
)  # fmt: skip
CAPTIONS = ["a red circle", "two blue squares on a yellow background", "a small green star"]


@pytest.fixture(scope="module")
def text_decoder(micro_clip, shapes_dir, tmp_path_factory):
    """A micro Imagen-like decoder fitted through `t2i fit --config stages/decoder_text.yaml --config
    stages/tiny/decoder_text.yaml` (4 steps, on the micro CLIP's text tokens)."""
    runs = tmp_path_factory.mktemp("decoder_text_runs")
    run(
        T2I, "fit", "--config", "stages/decoder_text.yaml", "--config", "stages/tiny/decoder_text.yaml",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.conditioning.init_args.text_encoder.init_args.pretrained", str(micro_clip),
        "--data.init_args.train", str(shapes_dir), "--data.init_args.val", str(shapes_dir),
    )  # fmt: skip
    return {"runs": runs, "decoder": runs / "decoder_text" / "checkpoints" / "last.ckpt"}


@pytest.fixture(scope="module")
def stage(text_decoder) -> DiffusionStage:
    return DiffusionStage.load_from_checkpoint(text_decoder["decoder"], map_location="cpu", weights_only=False)


def test_fit_writes_a_checkpoint_without_the_text_encoder_that_loads_and_samples(text_decoder, stage):
    checkpoint = torch.load(text_decoder["decoder"], map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 4
    for state in (checkpoint["state_dict"], checkpoint["current_model_state"]):  # EMA and raw weights
        names = {key if key.startswith("conditioning.") else key.split(".")[0] for key in state}
        assert names == {"net", "conditioning.null_token", "conditioning.null_pooled"}
    conditioning = checkpoint["hyper_parameters"]["conditioning"]
    assert conditioning["class_path"] == "t2i_lightning.stages.text_tokens.TextTokens"
    assert conditioning["init_args"]["text_encoder"]["init_args"]["model_name"] == MICRO
    assert checkpoint["text_encoder_identity"]["checkpoint_sha256"]
    encoder = stage.conditioning.text_encoder
    assert all(not p.requires_grad for p in encoder.parameters())
    assert not any(isinstance(m, OpenClipTextTokens) for m in stage.modules())
    assert copy.deepcopy(stage).conditioning.text_encoder is encoder  # the EMA copy shares it
    images = stage.sample(CAPTIONS[:2], steps=3, progress=False, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    grids = sorted((text_decoder["runs"] / "decoder_text" / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000004.png"]  # the prompt row, drawn by the stage itself


def test_loading_with_other_clip_weights_is_refused(text_decoder, micro_clip, tmp_path):
    checkpoint = torch.load(micro_clip, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    encoder = {"class_path": "t2i_lightning.nn.text_encoder.OpenClipTextTokens",
               "init_args": {"model_name": MICRO, "pretrained": str(other)}}  # fmt: skip
    with pytest.raises(ValueError, match="not the one the decoder was trained with"):
        DiffusionStage.load_from_checkpoint(
            text_decoder["decoder"], weights_only=False,
            conditioning={"class_path": "t2i_lightning.stages.text_tokens.TextTokens", "init_args": {"text_encoder": encoder}},
        )  # fmt: skip


def test_t2i_sample_takes_the_caption_straight_to_a_text_decoder(text_decoder, tmp_path):
    out = tmp_path / "grid.png"
    result = run(
        T2I, "sample", "--no-upsample", "--decoder", str(text_decoder["decoder"]), "--prompt", "a red circle", "--n", "2",
        "--steps", "3", "--translator", str(tmp_path / "no-translator.ckpt"), "--out", str(out),
    )  # fmt: skip
    assert "2 images of 32x32" in result.stdout
    with Image.open(out) as image:
        assert image.size == (2 * 32, 32)


def test_t2i_sample_refuses_image_embedding_options_for_a_text_decoder(text_decoder, tmp_path):
    message = "text-conditioned decoder: it takes --prompt only"
    out = tmp_path / "x.png"
    result = run(T2I, "sample", "--no-upsample", "--decoder", str(text_decoder["decoder"]), "--from-image", "x.png", "--out", str(out),
                 check=False)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(SystemExit, match=message):  # embedding arithmetic, through the same entry point in-process
        main(["sample", "--no-upsample", "--decoder", str(text_decoder["decoder"]), "--mix", "a red circle", "a blue square",
              "--out", str(out)])  # fmt: skip
    assert not out.exists()


def test_null_condition_stacks_with_real_conditions(stage):
    conditioning = stage.conditioning
    real, null = conditioning.encode(CAPTIONS, device=stage.device), conditioning.null(3)
    assert real.keys() == null.keys() == {"tokens", "mask", "pooled"}
    for key in real:
        assert null[key].shape == real[key].shape and null[key].dtype == real[key].dtype, key
    assert null["mask"][:, 0].all() and not null["mask"][:, 1:].any()
    mixed = conditioning.drop(real, torch.tensor([False, True, False]))
    for key in real:
        assert torch.equal(mixed[key][1], null[key][1]) and torch.equal(mixed[key][0], real[key][0])
    with_empty = conditioning.from_batch({"caption": ["a red circle", " "]}, stage.device)  # empty: unconditional
    assert torch.equal(with_empty["mask"][1], null["mask"][0])


def test_masked_token_features_do_not_change_the_output():
    torch.manual_seed(0)
    net = TextConditionalUNet(**MICRO_TEXT_UNET).eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 500])
    mask = torch.arange(8)[None] < torch.tensor([[3], [5]])
    cond = {"tokens": torch.randn(2, 8, 32), "mask": mask, "pooled": torch.randn(2, 32)}
    with torch.no_grad():
        out = net(x, t, cond)
        padded = net(x, t, {**cond, "tokens": torch.where(mask[..., None], cond["tokens"], 100 * torch.randn(2, 8, 32))})
        real = net(x, t, {**cond, "tokens": torch.where(mask[..., None], torch.randn(2, 8, 32), cond["tokens"])})
    assert out.shape == (2, 6, 32, 32)
    torch.testing.assert_close(padded, out, atol=1e-5, rtol=0)
    assert (real - out).abs().max() > 1e-3  # the real tokens are attended to
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 3, 33, 33), t[:1], cond)


def test_open_clip_tokens_mask_up_to_the_end_of_text_and_pool_as_encode_text(micro_clip):
    encoder = OpenClipTextTokens(MICRO, str(micro_clip))
    encoder.train()
    assert not encoder.training and (encoder.token_dim, encoder.pooled_dim, encoder.max_length) == (32, 32, 32)
    out = encoder(CAPTIONS)
    ids = encoder.tokenizer(CAPTIONS)
    assert out["tokens"].shape == (3, 32, 32) and out["mask"].dtype == torch.bool
    assert torch.equal(out["mask"], ids != 0)  # SOT, the words, EOT; open_clip pads with 0 after EOT
    torch.testing.assert_close(out["pooled"], encoder.clip.encode_text(ids), atol=1e-5, rtol=0)
    for bad in ([], ["a red circle", "  "], "a red circle"):
        with pytest.raises(ValueError):
            encoder(bad)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A randomly initialised one-layer T5 and a word-level tokenizer, saved as a local directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    path = tmp_path_factory.mktemp("t5")
    words = "a two red blue green yellow circle circles square squares star small large on background".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: i + 3 for i, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(path)
    config = T5Config(vocab_size=len(vocab), d_model=16, d_kv=8, num_heads=2, num_layers=1, d_ff=32)
    T5EncoderModel(config).save_pretrained(path)
    return path


def test_t5_encoder_from_a_local_directory(tiny_t5):
    encoder = T5TokenEncoder(str(tiny_t5), max_length=6)
    out = encoder(["a red circle", "two small blue squares"])
    assert out["tokens"].shape == (2, 6, 16) and out["pooled"].shape == (2, 16)
    assert out["mask"].sum(1).tolist() == [4, 5]  # the words and </s>
    mean = out["tokens"][0, :4].mean(0)
    torch.testing.assert_close(out["pooled"][0], mean)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        long = encoder(["two small blue squares on a large yellow background"])
    assert any("truncated" in str(w.message) for w in caught) and long["mask"].all()
    with pytest.raises(ValueError, match="empty"):
        encoder([""])
    # A stage built in Python records how to rebuild its encoder, not its weights.
    net = TextConditionalUNet(**{**MICRO_TEXT_UNET, "token_dim": 16, "pooled_dim": 16})
    stage = DiffusionStage(net, TextTokens(encoder))
    assert stage.conditioning.encoder_config == {"class_path": "t2i_lightning.nn.text_encoder.T5TokenEncoder",
                                                 "init_args": {"path": str(tiny_t5), "max_length": 6}}  # fmt: skip
    rebuilt = DiffusionStage(net, TextTokens(stage.conditioning.encoder_config))
    assert isinstance(rebuilt.conditioning.text_encoder, T5TokenEncoder)
    assert rebuilt.conditioning.null(2)["tokens"].shape == (2, 6, 16)
    with pytest.raises(ValueError, match="token_dim 32"):
        DiffusionStage(TextConditionalUNet(**MICRO_TEXT_UNET), TextTokens(encoder))


def test_a_missing_t5_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="T5 encoder directory not found: .*nowhere"):
        T5TokenEncoder(str(tmp_path / "nowhere"))
