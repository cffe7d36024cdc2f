"""Evaluation metrics against closed forms and constructed sets whose answer is known."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from t2i_lightning.data.decode import image_to_tensor
from t2i_lightning.data.image_io import open_image, tensor_to_images
from t2i_lightning.data.shapes.captions import parse_caption
from t2i_lightning.data.shapes.generate import ShapesConfig, make_sample
from t2i_lightning.data.shapes.scene import COLOURS, KINDS
from t2i_lightning.eval.clip_space import ClipInstrument
from t2i_lightning.eval.layout_probe import probe_layout
from t2i_lightning.eval.table import format_table
from t2i_lightning.metrics.alignment import alignment_report
from t2i_lightning.metrics.colour import object_colour_report
from t2i_lightning.metrics.distances import feature_distances
from t2i_lightning.metrics.scene_labels import scene_targets
from t2i_lightning.metrics.superres import edge_sharpness, gradient_magnitude
from t2i_lightning.nn.clip import create_clip, preprocess_for, tokenizer_for

from .cli_runs import MICRO


def gaussian(n: int, mean: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed)) + mean


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    """For N(μ1, I) and N(μ2, I) the Fréchet distance is ‖μ1 − μ2‖² (equal covariances cancel)."""
    shift = torch.tensor([1.0, -0.5, 0.0, 0.5, 0.0, 0.0, 0.25, 0.0])
    real = gaussian(4000, torch.zeros(8), seed=0)
    shifted = feature_distances(real, gaussian(4000, shift, seed=1))
    assert shifted["fd"] == pytest.approx(shift.square().sum().item(), rel=0.1)
    same = feature_distances(real, gaussian(4000, torch.zeros(8), seed=2))  # only the small-sample bias remains
    assert same["fd"] < 0.02 * shifted["fd"] and abs(same["kid"]) < 0.05 * shifted["kid"]


def test_kid_grows_with_the_shift():
    real = gaussian(500, torch.zeros(4), seed=0)
    kids = [feature_distances(real, gaussian(500, torch.full((4,), d), seed=1))["kid"] for d in (0.0, 0.5, 1.5)]
    assert kids[0] < kids[1] < kids[2]


def test_precision_and_recall_tell_fidelity_from_coverage():
    real = gaussian(600, torch.zeros(2), seed=0)
    identical = feature_distances(real, real.clone())
    assert identical["precision"] == identical["recall"] == 1.0
    far = feature_distances(real, gaussian(600, torch.full((2,), 50.0), seed=1))
    assert far["precision"] == far["recall"] == 0.0
    collapsed = real[real[:, 0] > 0]  # every sample realistic, half the modes missing
    half = feature_distances(real, collapsed)
    assert half["precision"] == 1.0 and half["recall"] < 0.75


def test_feature_distances_refuse_mismatched_sets():
    with pytest.raises(ValueError, match="same D"):
        feature_distances(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="more than 3 samples"):
        feature_distances(torch.randn(3, 2), torch.randn(10, 2))


def test_alignment_is_perfect_on_real_scenes_and_drops_where_a_generator_breaks():
    config = ShapesConfig(seed=5, size=64)
    metas = [json.loads(make_sample(config, "val", i)["json"]) for i in range(60)]
    captions = [m["captions"][0] for m in metas]
    real = alignment_report(captions, metas)
    assert real["all"] == 1.0 and all(real[a] == 1.0 for a in ("count", "kind", "colour", "binding"))

    names = list(COLOURS)
    permuted = {c: names[(i + 1) % len(names)] for i, c in enumerate(names)}  # every colour changed
    broken = copy.deepcopy(metas)
    for meta in broken:
        for obj in meta["objects"]:
            obj["colour"] = permuted[obj["colour"]]
    report = alignment_report(captions, broken)
    assert report["colour"] == report["binding"] == 0.0 and report["all"] == 0.0
    assert report["kind"] == report["count"] == 1.0  # shapes and counts are untouched
    if report["size"] is not None:
        assert report["size"] == 0.0  # a group whose pair is absent has no object of the stated size


def test_alignment_splits_by_object_count_so_a_generator_that_draws_one_shape_right_shows_it():
    """Every multi-object scene's kinds swapped (single objects untouched): the pooled kind share falls to the
    single-object captions' share of all, the split keeps 1.0 for one object and 0.0 for more."""
    config = ShapesConfig(seed=5, size=64)
    metas = [json.loads(make_sample(config, "val", i)["json"]) for i in range(80)]
    captions = [m["captions"][0] for m in metas]
    counts = [parse_caption(c).object_count for c in captions]
    assert {1, 2} <= set(counts)  # the data has both
    real = alignment_report(captions, metas)
    for c in set(counts):
        assert real[f"n_{c}obj"] == counts.count(c) and real[f"all_{c}obj"] == real[f"kind_{c}obj"] == 1.0

    broken = copy.deepcopy(metas)
    for meta in broken:
        if len(meta["objects"]) > 1:
            for obj in meta["objects"]:
                obj["kind"] = KINDS[(KINDS.index(obj["kind"]) + 1) % len(KINDS)]
    report = alignment_report(captions, broken)
    assert report["kind_1obj"] == report["all_1obj"] == 1.0
    assert all(report[f"kind_{c}obj"] == report[f"all_{c}obj"] == 0.0 for c in set(counts) - {1})
    assert report["kind"] == pytest.approx(counts.count(1) / len(counts))
    assert sum(report[f"n_{c}obj"] for c in set(counts)) == report["n"] == len(captions)


def test_the_table_shows_alignment_by_object_count_for_the_rows_that_have_it():
    def metric(mean, std=0.0):
        return {"mean": mean, "std": std}

    split = {"align_all": metric(0.2), "align_n_1obj": metric(10), "align_all_1obj": metric(0.5, 0.1),
             "align_kind_1obj": metric(0.6), "align_n_3obj": metric(4), "align_all_3obj": metric(0.0),
             "align_kind_3obj": metric(0.25)}  # fmt: skip
    table = {"header": {}, "settings": {"n": 14, "seeds": [0, 1], "options": {"sampler": "ddim", "steps": 25, "cfg_scale": 3.0, "threshold": None}},
             "rows": [{"variant": "full", "metrics": split}, {"variant": "real", "metrics": {"align_all": metric(1.0)}},
                      {"variant": "text", "skipped": "no checkpoint"}]}  # fmt: skip
    lines = format_table(table).splitlines()
    start = lines.index("Exact alignment and kind by the number of objects the caption states.")
    assert lines[start + 2] == "| variant | aligned, 1 object (n=10) | kind, 1 object (n=10) | aligned, 3 objects (n=4) | kind, 3 objects (n=4) |"
    assert lines[start + 4:] == ["| full | 0.5 ± 0.1 | 0.6 | 0 | 0.25 |"]  # rows without the split are left out
    del split["align_n_1obj"], split["align_n_3obj"]
    assert "by the number of objects" not in format_table(table)


def test_object_colours_are_read_where_each_object_is_and_nowhere_else():
    """Real scenes at the decoder's 64px: every object is named in its own colour in its own image, about
    one in ten in a random pair's, and repainting one object (and nothing else) loses exactly that object.
    Moving every object (the image rolled by half its size) loses their places but not their colours;
    nudging them by a few pixels keeps them near their places."""
    config = ShapesConfig()
    samples = [make_sample(config, "val", i) for i in range(40)]
    metas = [json.loads(s["json"]) for s in samples]
    images = torch.stack([image_to_tensor(open_image(s["png"]), 64) for s in samples])
    report = object_colour_report(images, images, metas, COLOURS)
    assert report["objects"] >= 40 and report["object_colour_hits"] == 1.0
    assert report["object_colour_hits_random_pairs"] < 0.3
    assert report["object_colour_present"] == 1.0 and report["object_colour_present_random_pairs"] < 0.5
    assert report["object_colour_near"] == 1.0 and report["object_colour_near_random_pairs"] < 0.3

    moved = object_colour_report(images, images.roll((32, 32), dims=(2, 3)), metas, COLOURS)
    assert moved["object_colour_hits"] < 0.5 and moved["object_colour_present"] == 1.0
    assert moved["object_colour_near"] < 0.5
    # nudged by less than the margin (8px of 64): out of place for hits, still near for near
    nudged = object_colour_report(images, images.roll((6, 6), dims=(2, 3)), metas, COLOURS)
    assert nudged["object_colour_near"] == 1.0 and nudged["object_colour_hits"] < 0.2

    obj = metas[0]["objects"][0]
    x0, y0, x1, y1 = (int(v * 64 / metas[0]["image_size"]) for v in obj["bbox"])
    other = "black" if obj["colour"] != "black" else "white"
    repainted = images.clone()
    repainted[0, :, y0 : y1 + 1, x0 : x1 + 1] = torch.tensor(COLOURS[other]).float()[:, None, None] / 127.5 - 1
    hits = object_colour_report(images, repainted, metas, COLOURS)["object_colour_hits"]
    assert hits == pytest.approx(1 - 1 / report["objects"])

    no_objects = object_colour_report(images[:2], images[:2], [{}, {}], COLOURS)
    assert no_objects["objects"] == 0
    with pytest.raises(ValueError, match="as many"):
        object_colour_report(images[:3], images[:3], metas[:2], COLOURS)


def test_layout_probe_reads_a_scene_from_an_embedding_that_holds_it_and_nothing_from_one_that_does_not():
    """An embedding that one-hot encodes each cell's kind and colour and the background (plus noise) is read
    almost perfectly; pure noise scores at the baseline that reads nothing."""
    metas = [json.loads(make_sample(ShapesConfig(size=64), split, i)["json"]) for split, n in (("train", 600), ("val", 200)) for i in range(n)]
    targets = scene_targets(metas)
    holds = torch.cat([
        torch.nn.functional.one_hot(targets["slot"], 9).flatten(1),
        torch.nn.functional.one_hot(targets["colour"].clamp(min=0), 12).flatten(1),
        torch.nn.functional.one_hot(targets["background"], 12),
    ], dim=1).float()  # fmt: skip
    holds = holds + 0.1 * torch.randn(holds.shape, generator=torch.Generator().manual_seed(0))
    read = probe_layout(holds[:600], metas[:600], holds[600:], metas[600:], steps=200)
    for name in ("occupancy", "slot_occupied", "colour_occupied", "background"):
        assert read[name] > 0.9 and read[name] > read[f"{name}_baseline"] + 0.1, (name, read)
    noise = torch.randn(800, 64, generator=torch.Generator().manual_seed(1))
    blind = probe_layout(noise[:600], metas[:600], noise[600:], metas[600:], steps=200)
    for name in ("occupancy", "background"):
        assert blind[name] < blind[f"{name}_baseline"] + 0.1, (name, blind)
    with pytest.raises(ValueError, match="as many"):
        probe_layout(noise[:10], metas[:9], noise[600:], metas[600:])


def test_alignment_report_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="one reading per caption"):
        alignment_report(["a red circle"], [])


def test_clip_score_is_100_cosine_of_the_clips_own_embeddings(micro_clip):
    clip = create_clip(MICRO, str(micro_clip))
    instrument = ClipInstrument(clip, tokenizer_for(MICRO), name="micro", batch_size=3)
    images = torch.rand(5, 3, 48, 48) * 2 - 1
    captions = ["a red circle", "two blue squares", "a green star", "a white ring", "a grey cross"]
    with torch.no_grad():
        expected_images = clip.encode_image(torch.stack([preprocess_for(clip)(im) for im in tensor_to_images(images)]))
        expected_text = clip.encode_text(tokenizer_for(MICRO)(captions))
    torch.testing.assert_close(instrument.image_features(images), expected_images, atol=1e-5, rtol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(expected_images, expected_text, dim=-1)
    torch.testing.assert_close(instrument.clip_score(images, captions), 100 * cosine.clamp(min=0), atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="one caption per image"):
        instrument.clip_score(images, captions[:2])


def test_edge_sharpness_is_one_for_the_truth_drops_with_blur_and_ignores_flat_noise():
    truth = torch.zeros(1, 3, 32, 32)
    truth[..., 8:24, 8:24] = 1.0  # a white square: its border is the only edge
    blurred = torch.nn.functional.avg_pool2d(truth, 3, stride=1, padding=1, count_include_pad=False)
    noisy = truth.clone()
    noisy[..., 0:4, :] += 0.01 * torch.randn(1, 3, 4, 32, generator=torch.Generator().manual_seed(0))
    sharp = edge_sharpness(truth, truth).item()
    assert sharp == 1.0
    assert edge_sharpness(truth, blurred).item() < 0.75  # a 3-pixel blur spreads each step over 3 pixels
    assert abs(edge_sharpness(truth, noisy).item() - 1.0) < 1e-6  # noise off the edges is not sharpness
    assert torch.isnan(edge_sharpness(torch.zeros(1, 3, 8, 8), torch.rand(1, 3, 8, 8)))  # no edges
    # the mean over all pixels is blind to the blur (total variation) and would call this "sharp"
    assert gradient_magnitude(blurred).mean() > 0.9 * gradient_magnitude(truth).mean()
