"""Pretrained CLIP weights as users bring them (issue 35): open_clip files (.bin, .safetensors), OpenAI's
TorchScript archives and state dicts, read without running code; a hub tag offline; and a ViT-B-32 file
through extraction and the translator, whose widths follow the embeddings."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from t2i_lightning.nn.clip import create_clip, register_project_configs
from t2i_lightning.nn.torchscript_weights import TorchScriptArchiveError, read_state_dict

from .cli_runs import ROOT, extract, make_dry_run, run

SMALL = "shapes-vit-micro"  # a plain ViT CLIP: OpenAI's module and key names, 32px
LAION_TAG = "laion2b_s34b_b79k"
LAION_REPO = "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"


def small_clip(quick_gelu: bool = False) -> torch.nn.Module:
    register_project_configs()
    torch.manual_seed(0)
    return open_clip.create_model(SMALL, force_quick_gelu=quick_gelu).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    tokens = open_clip.get_tokenizer(SMALL)(["a red circle", "two blue squares"])
    return images, tokens


def assert_same_weights(loaded: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    state = loaded.state_dict()
    assert state.keys() == weights.keys()
    for name, value in weights.items():
        assert torch.equal(state[name], value.to(state[name].dtype)), name


def save_safetensors(model: torch.nn.Module, path: Path) -> None:
    save_file({name: value.contiguous() for name, value in model.state_dict().items()}, str(path))


def test_open_clip_bin_and_safetensors_files_load_back(tmp_path):
    model = small_clip()
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    save_safetensors(model, tmp_path / "open_clip_model.safetensors")
    fresh = create_clip(SMALL)  # another random draw: loading must replace it
    assert not torch.equal(fresh.visual.conv1.weight, model.visual.conv1.weight)
    for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
        loaded = create_clip(SMALL, str(tmp_path / name))
        assert_same_weights(loaded, model.state_dict())
        assert not isinstance(loaded.transformer.resblocks[0].mlp.gelu, QuickGELU)  # open_clip's files: as named
    with pytest.raises(ValueError, match=r"open_clip_model.safetensors does not hold shapes-vit-tiny weights \(.*width changed"):
        create_clip("shapes-vit-tiny", str(tmp_path / "open_clip_model.safetensors"))


def traced_archive(model: torch.nn.Module, path: Path) -> Path:
    """``model`` saved as OpenAI saved CLIP: a TorchScript archive of its traced encoders."""
    images, tokens = inputs()
    traced = torch.jit.trace_module(model, {"encode_image": (images,), "encode_text": (tokens,)}, check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def test_a_torchscript_archive_loads_without_running_it(tmp_path, monkeypatch):
    model = small_clip(quick_gelu=True)  # OpenAI's CLIPs use QuickGELU
    archive = traced_archive(model, tmp_path / "ViT-micro.pt")
    assert "attn_mask" in read_state_dict(archive)  # a plain tensor attribute, not a weight: dropped
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load runs the archive's code"))
    loaded = create_clip(SMALL, str(archive)).eval()
    assert isinstance(loaded.transformer.resblocks[0].mlp.gelu, QuickGELU)
    images, tokens = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens), rtol=0, atol=0)


def rewritten_archive(source: Path, target: Path, replace: dict[str, bytes | None]) -> Path:
    """A copy of the zip ``source`` whose records named in ``replace`` (after the top folder) are replaced
    by new bytes, or left out for None."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            inner = item.filename.split("/", 1)[1]
            if inner not in replace:
                new.writestr(item, old.read(item))
            elif replace[inner] is not None:
                new.writestr(item, replace[inner])
    return target


class RunsCode:
    """A pickle that, unpickled without restriction, would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_an_archive_that_cannot_be_read_safely_is_refused_with_the_conversion(tmp_path):
    archive = traced_archive(small_clip(quick_gelu=True), tmp_path / "ViT-micro.pt")
    marker = tmp_path / "code-ran"
    evil = rewritten_archive(archive, tmp_path / "evil.pt", {"data.pkl": pickle.dumps(RunsCode(marker), protocol=2)})
    broken = rewritten_archive(archive, tmp_path / "broken.pt", {"data/0": None})
    for path, cause in ((evil, "os.makedirs is not one a module's weights need"), (broken, "KeyError")):
        with pytest.raises(TorchScriptArchiveError) as refused:
            create_clip(SMALL, str(path))
        message = str(refused.value)
        assert "\n" not in message and cause in message
        assert f"torch.jit.load('{path}', map_location='cpu').state_dict(), '{path.with_suffix('.state.pt')}'" in message
        assert f"CLIP={path.with_suffix('.state.pt')}" in message
    assert not marker.exists()


def test_an_openai_state_dict_loads_with_quick_gelu(tmp_path):
    model = small_clip(quick_gelu=True)
    weights = {name: value.half() for name, value in model.state_dict().items()}  # OpenAI's are float16
    sizes = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(32), "vocab_size": torch.tensor(49408)}
    torch.save({**weights, **sizes}, tmp_path / "openai.pt")
    loaded = create_clip(SMALL, str(tmp_path / "openai.pt"))
    assert_same_weights(loaded, weights)
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    torch.save({**weights, **sizes, "visual.extra": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"does not hold shapes-vit-micro weights .*Unexpected key\(s\).*visual\.extra"):
        create_clip(SMALL, str(tmp_path / "extra.pt"))
    del weights["logit_scale"]
    torch.save({**weights, **sizes}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"Missing key\(s\).*logit_scale"):
        create_clip(SMALL, str(tmp_path / "missing.pt"))


def load_tag_in_subprocess(env: dict[str, str]) -> tuple[str, float]:
    """``create_clip('ViT-B-32', LAION_TAG)`` in a fresh interpreter (the hub client reads its settings at
    import): what it printed (the error, or the sum of the weights) and the seconds the call took."""
    code = (
        "import time\nfrom t2i_lightning.nn.clip import create_clip\nstart = time.perf_counter()\n"
        f"try:\n    out = float(sum(w.double().sum() for w in create_clip('ViT-B-32', {LAION_TAG!r}).state_dict().values()))\n"
        "except Exception as e:\n    out = f'{type(e).__name__} | {e}'\n"
        "print(out, '|', time.perf_counter() - start)\n"
    )
    printed = run(sys.executable, "-c", code, env=env).stdout.strip().splitlines()[-1]
    result, seconds = printed.rsplit(" | ", 1)
    return result, float(seconds)


@pytest.mark.parametrize(
    "offline",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://127.0.0.1:9", "https_proxy": "", "HTTPS_PROXY": ""}],
    ids=["HF_HUB_OFFLINE", "hub-unreachable"],
)
def test_a_hub_tag_offline_fails_at_once_naming_the_local_file_route(tmp_path, offline):
    result, seconds = load_tag_in_subprocess({"HF_HUB_CACHE": str(tmp_path / "empty-cache"), **offline})
    assert result.startswith(
        "PretrainedWeightsError | Pass the ViT-B-32 weights file instead: CLIP=/path/to/open_clip_model.safetensors "
        "(make) or pretrained: /path/to/open_clip_model.safetensors (YAML)."
    ), result
    assert "not in the cache" in result
    assert seconds < 10  # the hub client's retries took 47 s


@pytest.fixture(scope="module")
def vit_b_32(tmp_path_factory):
    """A random ViT-B-32 (the issue's model) saved as an open_clip .safetensors file, and its weights."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    path = tmp_path_factory.mktemp("vit_b_32") / "open_clip_model.safetensors"
    save_safetensors(model, path)
    return path, model.state_dict()


def test_a_cached_hub_tag_still_loads_offline(vit_b_32, tmp_path):
    path, weights = vit_b_32
    revision = "0" * 40
    snapshot = tmp_path / "hub" / LAION_REPO / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / path.name).symlink_to(path)
    (tmp_path / "hub" / LAION_REPO / "refs").mkdir()
    (tmp_path / "hub" / LAION_REPO / "refs" / "main").write_text(revision)
    result, _ = load_tag_in_subprocess({"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert float(result) == pytest.approx(float(sum(w.double().sum() for w in weights.values())), rel=1e-12)


def test_a_vit_b_32_file_embeds_and_trains_a_translator_of_its_width(vit_b_32, shapes_dir, tmp_path):
    path, weights = vit_b_32
    assert_same_weights(create_clip("ViT-B-32", str(path)), weights)
    emb, runs = tmp_path / "emb", tmp_path / "runs"
    one_shard_each = f"{shapes_dir}/{{train,val}}-000000.tar"  # 32 images: 40 s on 2 cores, all 152 take 2 minutes
    extract(path, one_shard_each, emb, "--model.init_args.model_name", "ViT-B-32")
    stats = json.loads((emb / "stats.json").read_text())
    assert (stats["dim"], stats["count"]) == (512, 32)
    lines = make_dry_run(
        "train-translator", "CLIP_MODEL=ViT-B-32", f"CLIP={path}", f"DATA={shapes_dir}", f"EMB={emb}",
        f"RUNS={runs}", "STAGE_OVERLAY=stages/tiny", "ACCELERATOR=cpu", "DEVICES=1",
    )  # fmt: skip
    [fit] = [line for line in lines if "fit --config stages/translator.yaml" in line]
    assert "--config stages/tiny/translator.yaml" in fit  # whose in_dim/out_dim of 32 the make variable overrides
    steps = " --trainer.max_steps 1 --trainer.val_check_interval 1"
    subprocess.run(
        ["bash", "-c", fit + steps], cwd=ROOT, check=True, capture_output=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "T2I_TIMINGS": ""},
    )  # fmt: skip
    checkpoint = torch.load(runs / "translator" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 1
    state = checkpoint["state_dict"]  # the statistics' buffers are as wide as the net's input and output
    assert state["mean_txt"].shape == state["mean_img"].shape == (512,)


def test_a_width_mismatch_names_the_flags_to_pass(tmp_path):
    from t2i_lightning.nn.translator import ResidualMLP
    from t2i_lightning.nn.unet import ConditionalUNet
    from t2i_lightning.stages.conditioning import ImageEmbedding
    from t2i_lightning.stages.translator import TranslatorStage

    stats = {"dim": 4, **{f"{moment}_{side}": [0.0] * 4 for moment in ("mean", "std") for side in ("img", "txt")}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="pass --model.init_args.net.init_args.in_dim 4 --model.init_args.net.init_args.out_dim 4"):
        TranslatorStage(ResidualMLP(in_dim=8, out_dim=8, width=8, depth=1), stats=str(tmp_path / "stats.json"))
    net = ConditionalUNet(image_size=8, base_channels=32, channel_mult=[1], num_res_blocks=1, attention_resolutions=[],
                          head_channels=32, cond_dim=8, layout_size=0)  # fmt: skip
    with pytest.raises(ValueError, match="pass --model.init_args.net.init_args.cond_dim 4 "):
        ImageEmbedding(stats=str(tmp_path / "stats.json")).bind(net)
