"""The judge: scene targets and their decoding, per-attribute scoring, and a tiny fit through the real CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from t2i_lightning.data.shapes.captions import caption_matches, parse_caption
from t2i_lightning.data.shapes.generate import ShapesConfig, make_sample
from t2i_lightning.eval.judging import judge_images
from t2i_lightning.metrics.scene_labels import (
    COLOUR_NAMES,
    IGNORE,
    SLOT_CLASSES,
    attribute_hits,
    decode_scenes,
    scene_targets,
)
from t2i_lightning.nn.judge import SceneJudge
from t2i_lightning.pipeline import load_judge

from .cli_runs import judge_fit_args, make_dry_run, run, scalars


def sample_metas(n: int) -> list[dict]:
    config = ShapesConfig(seed=3, size=64)
    return [json.loads(make_sample(config, "val", i)["json"]) for i in range(n)]


def perfect_logits(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Logits whose argmax is the target (IGNORE slots read as class 0)."""
    sizes = {"slot": len(SLOT_CLASSES), "colour": len(COLOUR_NAMES), "size": 2, "background": len(COLOUR_NAMES)}
    return {k: F.one_hot(v.clamp(min=0), sizes[k]).float() for k, v in targets.items()}


def test_decoded_targets_satisfy_every_true_caption_of_the_scene():
    metas = sample_metas(40)
    scenes = decode_scenes(perfect_logits(scene_targets(metas)))
    for meta, scene in zip(metas, scenes, strict=True):
        assert scene["count"] == meta["count"]
        assert scene["background"]["colour"] == meta["background"]["colour"]
        for caption in meta["captions"]:  # relations, positions, sizes and counts all read back
            assert caption_matches(parse_caption(caption), scene), (caption, scene)


def test_attribute_hits_count_each_kind_of_mistake_where_it_belongs():
    metas = sample_metas(24)
    targets = scene_targets(metas)
    logits = perfect_logits(targets)
    assert all(v.mean().item() == 1.0 for v in attribute_hits(logits, targets).values())

    occupied = (targets["slot"] != 0).nonzero()
    b, c = occupied[0].tolist()
    wrong_colour = {k: v.clone() for k, v in logits.items()}
    wrong_colour["colour"][b, c] = wrong_colour["colour"][b, c].roll(1)
    hits = attribute_hits(wrong_colour, targets)
    objects = len(occupied)
    assert hits["colour"].sum().item() == objects - 1
    assert hits["kind"].mean().item() == hits["count"].mean().item() == 1.0
    assert hits["scene"][b].item() == 0.0 and hits["scene"].sum().item() == len(metas) - 1

    empty_b, empty_c = (targets["slot"] == 0).nonzero()[0].tolist()
    ghost = {k: v.clone() for k, v in logits.items()}
    ghost["slot"][empty_b, empty_c] = ghost["slot"][empty_b, empty_c].roll(1)  # an object where there is none
    hits = attribute_hits(ghost, targets)
    assert hits["kind"].mean().item() == hits["position"].mean().item() == 1.0
    assert hits["count"][empty_b].item() == 0.0 and hits["scene"][empty_b].item() == 0.0
    assert (targets["colour"] == IGNORE).any()


def test_scene_targets_refuse_data_without_scene_metadata():
    with pytest.raises(ValueError, match="scene metadata"):
        scene_targets([{"captions": ["a photo"]}])


def test_judge_reads_any_image_size_and_gives_one_reading_per_slot():
    judge = SceneJudge(image_size=32, channels=(8, 16), groups=4)
    for side in (16, 32, 64):
        logits = judge(torch.randn(2, 3, side, side))
        assert logits["slot"].shape == (2, 9, len(SLOT_CLASSES)) and logits["background"].shape == (2, 12)
    assert judge.features(torch.randn(3, 3, 64, 64)).shape == (3, 16)


def test_judge_fit_lowers_the_loss_and_logs_every_attribute_accuracy(judge_run):
    logged = scalars(judge_run / "judge")
    losses = logged["train/loss"]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    for name in ("kind", "colour", "size", "position", "count", "background", "scene"):
        assert 0.0 <= logged[f"val/acc_{name}"][-1] <= 1.0
    judge = load_judge(str(judge_run / "judge" / "checkpoints" / "last.ckpt"))
    assert not any(p.requires_grad for p in judge.parameters())


def test_load_judge_refuses_another_stages_checkpoint(micro_clip):
    with pytest.raises(ValueError, match="is not a checkpoint of the judge stage .*make judge"):
        load_judge(str(micro_clip))


def test_judge_images_reads_in_batches_what_one_call_reads(judge_run):
    judge = load_judge(str(judge_run / "judge" / "checkpoints" / "last.ckpt")).net
    images = torch.rand(5, 3, 64, 64) * 2 - 1
    scenes, features = judge_images(judge, images, batch_size=2)
    assert scenes == decode_scenes(judge(images))
    torch.testing.assert_close(features, judge.features(images), atol=1e-5, rtol=1e-5)


def test_bf16_mixed_judge_training_keeps_float32_weights_and_make_validates_in_float32(shapes_dir, tmp_path):
    """`make judge`'s precision on CPUs with native bf16: the fit runs under autocast (JUDGE_PRECISION)
    with float32 weights and finite losses; the validation that prints the judge's accuracy does not."""
    import re

    runs = tmp_path / "runs"
    run(*judge_fit_args(runs, shapes_dir, 3), "--trainer.precision", "bf16-mixed")
    checkpoint = torch.load(runs / "judge" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert all(w.dtype == torch.float32 for w in checkpoint["state_dict"].values() if w.is_floating_point())
    logged = scalars(runs / "judge")
    assert all(torch.isfinite(torch.tensor(logged[tag])).all() for tag in ("train/loss", "val/loss", "val/acc_scene"))
    out = make_dry_run("judge", "RUNS=/nonexistent", "DATA=/nonexistent", "PRECISION=bf16-mixed")
    fit = next(line for line in out if " fit --config stages/judge.yaml" in line)
    validate = next(line for line in out if " validate --config stages/judge.yaml" in line)
    assert re.search(r"--trainer.precision bf16-mixed\b", fit) and "precision" not in validate
