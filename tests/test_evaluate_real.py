"""`t2i evaluate` on real photos (a COCO-format import): no judge, Inception-space metrics from a local
(random-init) weights file, the real set from the asked split, N cut to what a split has, the reference
features cached; and the pieces behind them (safe Inception loading, ``full_256`` with an upsampler
conditioned on CLIP image embeddings)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from t2i_lightning.cli import main
from t2i_lightning.data.importers import import_coco
from t2i_lightning.eval.clip_space import ClipInstrument
from t2i_lightning.eval.inception import (
    FEATURES,
    InceptionInstrument,
    inception_network,
    read_inception_state,
)
from t2i_lightning.eval.reference import ReferenceSet, load_reference
from t2i_lightning.eval.variants import EvalModels, SamplingOptions, variant
from t2i_lightning.nn.clip import create_clip
from t2i_lightning.nn.sr_unet import SuperResUNet
from t2i_lightning.stages.diffusion import DiffusionStage
from t2i_lightning.stages.low_res_image import LowResImage

from .cli_runs import MICRO

SPLITS = {"val": 8, "test": 10}  # images per split of the COCO fixture
NOT_SHAPES = "is not a shapes dataset (its judge-space columns and exact alignment need shapes metadata)"
JUDGE_KEYS = ("judge_", "align_")
INCEPTION_COLUMNS = ("FID", "IS", "KID", "Inception P", "Inception R")
JUDGE_COLUMNS = ("judge FD", "judge KID", "judge P", "aligned", "colour", "kind", "count", "binding")


class _RandomInception(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 left at its initialisation (nothing downloaded, nothing loaded)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def random_inception_state() -> dict[str, torch.Tensor]:
    """A state dict of torch-fidelity's InceptionV3 with random (He-initialised, so features do not vanish
    through its 90-odd layers) weights: a stand-in for the real file in tests."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    net = _RandomInception("inception-v3-compat", FEATURES, feature_extractor_weights_path=empty)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net.state_dict()


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(random_inception_state(), path)
    return path


@pytest.fixture(scope="module")
def eval_clip(tmp_path_factory) -> Path:
    """A random-init micro open_clip model saved as a plain state-dict file (as a pretrained CLIP file is)."""
    path = tmp_path_factory.mktemp("eval_clip") / "micro-clip.pt"
    torch.manual_seed(1)
    torch.save(create_clip(MICRO).state_dict(), path)
    return path


def write_coco_split(root: Path, split: str, count: int, first_id: int) -> tuple[Path, Path]:
    """``count`` small JPEG photos-to-be (random colour fields with a bright box) and a COCO captions JSON."""
    images = root / f"{split}2017"
    images.mkdir(parents=True)
    rng = np.random.default_rng(first_id)
    entries, annotations = [], []
    for image_id in range(first_id, first_id + count):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        top, left = rng.integers(0, 20, 2)
        pixels[top : top + 16, left : left + 20] = rng.integers(128, 256, 3, dtype=np.uint8)
        name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels).save(images / name, quality=90)
        entries.append({"id": int(image_id), "file_name": name, "width": 48, "height": 40})
        for n in range(2):
            annotations.append({"image_id": int(image_id), "id": len(annotations), "caption": f"photo {image_id} view {n}"})
    captions = root / "annotations" / f"captions_{split}2017.json"
    captions.parent.mkdir(exist_ok=True)
    captions.write_text(json.dumps({"images": entries, "annotations": annotations}))
    return images, captions


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory) -> Path:
    """A COCO-format dataset imported through ``import_coco``: 8 val and 10 test images at 64px."""
    root = tmp_path_factory.mktemp("coco")
    out = root / "shards"
    for n, (split, count) in enumerate(SPLITS.items()):
        images, captions = write_coco_split(root / "raw", split, count, first_id=100 * (n + 1))
        import_coco(images, captions, out, split=split, size=64, progress=False)
    return out


def evaluate_real(data: Path, out: Path, *extra: str) -> str:
    """``t2i evaluate --variants real`` through the CLI's entry point, in this process; its stdout."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([
            "evaluate", "--data", str(data), "--split", "val", "--real-split", "test", "--variants", "real",
            "--seeds", "0", "--clip", str(out / "no-generator-clip.ckpt"), "--clip-model", MICRO, *extra,
            "--out", str(out),
        ])  # fmt: skip
    return printed.getvalue()


@pytest.fixture(scope="module")
def coco_run(coco_data, inception_weights, eval_clip, tmp_path_factory):
    """`t2i evaluate --variants real` on the COCO fixture, asking for more images than it has, with every
    Inception pass counted: ``run(*flags)`` evaluates again into the same output directory and returns its
    stdout and how many passes extracted reference features; ``seen`` holds the images of each pass."""
    seen, reference_passes = [], []
    original_features, original_extract = InceptionInstrument.features, InceptionInstrument._extract

    def features(self, images):
        reference_passes[-1] += 1
        return original_features(self, images)

    def extract(self, images):
        seen.append(images.clone())
        return original_extract(self, images)

    out = tmp_path_factory.mktemp("eval_real") / "eval"

    def run(*flags: str) -> tuple[str, int]:
        reference_passes.append(0)
        stdout = evaluate_real(coco_data, out, "--eval-clip", str(eval_clip), "--eval-clip-model", MICRO,
                               "--inception-weights", str(inception_weights), *flags)  # fmt: skip
        return stdout, reference_passes[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(InceptionInstrument, "features", features)
        patch.setattr(InceptionInstrument, "_extract", extract)
        stdout, passes = run("--n", "100", "--device", "cpu")
        yield {"run": run, "out": out, "stdout": stdout, "passes": passes, "seen": list(seen),
               "table": json.loads((out / "table.json").read_text()), "markdown": (out / "table.md").read_text()}  # fmt: skip


def test_real_photos_are_scored_in_inception_and_clip_space_without_judge_columns(coco_run, coco_data, eval_clip):
    stdout, table, markdown = coco_run["stdout"], coco_run["table"], coco_run["markdown"]
    # N cut to the smaller split, said, and recorded
    assert f"only 8 val images in {coco_data}: using N=8" in stdout
    assert f"only 10 test images in {coco_data}: using N=8" in stdout
    assert table["settings"]["n"] == 8 and "N = 8 per variant" in markdown
    assert table["header"]["judge"] == f"none: {coco_data} {NOT_SHAPES}"
    assert f"- **judge**: none: {coco_data} {NOT_SHAPES}" in markdown
    assert table["header"]["CLIP space"] == f"{MICRO} ({eval_clip})"  # the eval CLIP, not the generator's
    assert table["header"]["device"] == "cpu"
    (row,) = table["rows"]
    metrics = {key: value["mean"] for key, value in row["metrics"].items()}
    assert not [key for key in metrics if key.startswith(JUDGE_KEYS)] and "judge_fd_at_n" not in row
    for key in ("fid", "is", "inception_kid", "inception_precision", "inception_recall", "clip_fd", "clip_kid", "clip_score"):
        assert math.isfinite(metrics[key]), (key, metrics[key])
    assert metrics["fid"] > 0 and metrics["is"] >= 1.0
    assert 0 <= metrics["inception_precision"] <= 1 and 0 <= metrics["inception_recall"] <= 1
    # Inception saw the first 8 val images (the reference set), then the first 8 test images (the real row)
    reference, real = coco_run["seen"]
    assert torch.equal(reference, load_reference(str(coco_data), "val", 8).images)
    assert torch.equal(real, load_reference(str(coco_data), "test", 8).images)
    header_row = next(line for line in markdown.splitlines() if line.startswith("| variant |"))
    columns = [cell.strip() for cell in header_row.strip("|").split("|")]
    assert all(name in columns for name in INCEPTION_COLUMNS) and not set(JUDGE_COLUMNS) & set(columns)
    real_row = next(line for line in markdown.splitlines() if line.startswith("| real |"))
    assert "no Inception weights" not in real_row and "nan" not in real_row


def test_a_second_run_reuses_the_reference_features_and_gives_the_same_numbers(coco_run):
    assert coco_run["passes"] == 1
    stdout, passes = coco_run["run"]("--n", "100", "--device", "auto")  # auto is the CPU here: the same instrument
    assert passes == 0 and "reference features (8 images): clip cached, inception cached" in stdout
    again = json.loads((coco_run["out"] / "table.json").read_text())

    def scores(table: dict) -> dict:
        return {k: v for k, v in table["rows"][0]["metrics"].items() if k != "s_per_image"}

    assert scores(again) == scores(coco_run["table"])


def test_reference_features_are_recomputed_when_what_they_were_made_from_changes(coco_data, eval_clip, tmp_path, monkeypatch):
    """In the CLIP space (no Inception weights here: the same cache serves every space)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    extracted = []
    original = ClipInstrument.image_features
    monkeypatch.setattr(ClipInstrument, "image_features", lambda self, images: extracted.append(len(images)) or original(self, images))
    out = tmp_path / "eval"

    def run(*flags: str, clip: Path = eval_clip) -> list[int]:
        extracted.clear()
        evaluate_real(coco_data, out, "--eval-clip", str(clip), "--eval-clip-model", MICRO, *flags)
        return list(extracted)

    def clip_fd() -> float:
        return json.loads((out / "table.json").read_text())["rows"][0]["metrics"]["clip_fd"]["mean"]

    assert run("--n", "6") == [6, 6]  # the reference set, then the real row
    first = clip_fd()
    assert run("--n", "6") == [6]  # the reference features read back
    assert run("--n", "5") == [5, 5]  # another N: another file
    cache = out / "reference-cache"
    assert len(list(cache.glob("clip-*.pt"))) == 2 and not list(cache.glob(".*.tmp"))
    # a file whose record is not this reference set's (stale, or another's under the same name) is not used
    (stale,) = [path for path in cache.glob("clip-*.pt")
                if json.loads(torch.load(path, weights_only=True)["record"])["reference"]["n"] == 6]  # fmt: skip
    stored = torch.load(stale, weights_only=True)
    record = json.loads(stored["record"])
    record["reference"]["images_sha256"] = "0" * 64
    torch.save({"record": json.dumps(record, sort_keys=True), "features": torch.zeros_like(stored["features"])}, stale)
    assert run("--n", "6") == [6, 6] and clip_fd() == first
    assert json.loads(torch.load(stale, weights_only=True)["record"])["reference"]["images_sha256"] != "0" * 64
    other_clip = tmp_path / "other-clip.pt"  # another evaluation CLIP: its own features
    torch.manual_seed(2)
    torch.save(create_clip(MICRO).state_dict(), other_clip)
    assert run("--n", "6", clip=other_clip) == [6, 6] and len(list(cache.glob("clip-*.pt"))) == 3
    assert clip_fd() != first


def test_a_split_the_data_lack_or_a_file_that_is_not_inception_weights_is_refused_in_one_line(coco_data, eval_clip, tmp_path):
    def refused(*flags: str) -> str:
        with pytest.raises(SystemExit) as stop:
            evaluate_real(coco_data, tmp_path, "--eval-clip", str(eval_clip), "--eval-clip-model", MICRO, *flags)
        assert not (tmp_path / "table.json").exists()
        return str(stop.value.code)

    message = refused("--real-split", "train")
    assert "t2i evaluate: error:" in message and "No 'train-*.tar' shards" in message
    assert "it holds test, val shards" in message
    not_weights = tmp_path / "weights.pth"
    not_weights.write_text("not a tensor file\n")
    message = refused("--inception-weights", str(not_weights))
    assert f"t2i evaluate: error: {not_weights} is not an Inception-v3 state dict" in message


def test_judge_none_leaves_the_judge_columns_out_on_shapes_and_missing_inception_says_so(
    shapes_dir, eval_clip, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached Inception weights
    stdout = evaluate_real(shapes_dir, tmp_path / "eval", "--eval-clip", str(eval_clip), "--eval-clip-model",
                           MICRO, "--judge", "none", "--n", "6")  # fmt: skip
    assert "only" not in stdout  # 40 val and 16 test images: N = 6 as asked
    table = json.loads((tmp_path / "eval" / "table.json").read_text())
    assert table["header"]["judge"].startswith("none (--judge none)") and table["settings"]["n"] == 6
    assert not [key for key in table["rows"][0]["metrics"] if key.startswith(JUDGE_KEYS) or key in ("fid", "is")]
    markdown = (tmp_path / "eval" / "table.md").read_text()
    real_row = next(line for line in markdown.splitlines() if line.startswith("| real |"))
    assert real_row.count("no Inception weights") == len(INCEPTION_COLUMNS) and "judge FD" not in markdown


def test_inception_weights_are_read_without_running_pickled_code_and_refused_clearly(inception_weights, tmp_path):
    state = read_inception_state(str(inception_weights))
    net = inception_network(str(inception_weights))
    assert torch.equal(net.state_dict()["fc.weight"], state["fc.weight"])

    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    refused = {"code.pth": {"weights": Payload()}, "other.pth": {"conv.weight": torch.zeros(2, 2)}}
    for name, content in refused.items():
        torch.save(content, tmp_path / name)
    (tmp_path / "text.pth").write_text("not a tensor file\n")
    for name in ("code.pth", "other.pth", "text.pth"):
        with pytest.raises(ValueError) as error:
            inception_network(str(tmp_path / name))
        message = str(error.value)
        assert str(tmp_path / name) in message and "not an Inception-v3 state dict" in message and "\n" not in message
    assert not marker.exists()


def test_full_256_gives_an_embedding_conditioned_upsampler_the_translated_embeddings(monkeypatch):
    """The paper upsampler takes CLIP image embeddings: the row passes the ones the decoder was given."""
    torch.manual_seed(0)
    translated = torch.randn(5, 8)
    given_to_decoder, given_to_upsampler = [], []

    class Embedder:
        def __call__(self, captions):
            return translated[[int(c.split()[-1]) for c in captions]]

    class Chain:
        embedder = Embedder()
        decoder = type("Decoder", (), {"net": type("Net", (), {"image_size": 16})()})()

        def decode(self, cond, generator=None, **options):
            given_to_decoder.append(cond)
            return torch.rand(len(cond), 3, 16, 16, generator=generator) * 2 - 1

    net = SuperResUNet(image_size=64, base_channels=16, channel_mult=(1, 2), groups=8, cond_dim=8)
    upsampler = DiffusionStage(net, LowResImage(), parameterization="eps", sampler="ddpm", steps=2, threshold=None).eval()
    encode = upsampler.conditioning.encode

    def spy(inputs, **options):
        given_to_upsampler.append(options["image_embeddings"])
        return encode(inputs, **options)

    monkeypatch.setattr(upsampler.conditioning, "encode", spy)
    models = EvalModels(paths={}, _loaded={"chain:decoder": Chain(), "upsampler": upsampler})
    ref = ReferenceSet(torch.zeros(5, 3, 64, 64), [f"caption {i}" for i in range(5)], [{}] * 5, [str(i) for i in range(5)])
    images = variant("full_256").draw(models, ref, None, SamplingOptions(batch_size=2), torch.Generator().manual_seed(0))
    assert images.shape == (5, 3, 64, 64) and torch.isfinite(images).all()
    assert torch.equal(torch.cat(given_to_decoder), translated)
    assert torch.equal(torch.cat(given_to_upsampler), translated)


@pytest.mark.slow
def test_a_drawn_row_on_real_photos_is_scored_by_an_eval_clip_that_is_not_the_generators(
    decoder, coco_data, inception_weights, eval_clip, tmp_path
):
    """`full` from the micro chain (its own trained CLIP) for the COCO captions, measured with a separate
    evaluation CLIP file and the local Inception weights."""
    out = tmp_path / "eval"
    evaluate_real(
        coco_data, out, "--variants", "real", "full", "--clip", str(decoder["clip"]), "--translator",
        str(decoder["translator"]), "--decoder", str(decoder["decoder"]), "--eval-clip", str(eval_clip),
        "--eval-clip-model", MICRO, "--inception-weights", str(inception_weights), "--steps", "2",
        "--batch-size", "4", "--device", "cpu", "--precision", "32-true",
    )  # fmt: skip
    table = json.loads((out / "table.json").read_text())
    assert table["header"]["CLIP space"] == f"{MICRO} ({eval_clip})"  # no "the generator's own CLIP"
    rows = {row["variant"]: row["metrics"] for row in table["rows"]}
    assert list(rows) == ["real", "full"]
    for metrics in rows.values():
        assert not [key for key in metrics if key.startswith(JUDGE_KEYS)]
        for key in ("fid", "is", "inception_kid", "inception_precision", "inception_recall", "clip_fd", "clip_score"):
            assert math.isfinite(metrics[key]["mean"]), key
    assert rows["full"]["fid"]["mean"] != rows["real"]["fid"]["mean"]
