"""Tests for the embedded shapes dataset (t2i_lightning.data.shapes) and its shard output.

One 128px dataset (``dataset``) is generated per module and read by most tests; the tests of
determinism, resume and overwrite generate their own tiny 64px datasets.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from t2i_lightning.cli import main as cli_main
from t2i_lightning.data.flip import flip_meta
from t2i_lightning.data.shapes.captions import COLOUR_WORDS, caption_matches, parse_caption
from t2i_lightning.data.shapes.generate import (
    PENDING_NAME,
    DatasetExistsError,
    ShapesConfig,
    generate_shapes,
)
from t2i_lightning.data.shapes.scene import COLOURS, KINDS, POSITIONS, RELATIONS, flip_position

from .cli_runs import make_dry_run

SPLITS = ("train", "val", "test")
SHARD_RE = re.compile(r"^(train|val|test)-(\d{6})\.tar$")
OLD_NS = 1_000_000_000 * 1_000_000_000  # 2001-09-09: an mtime no run in a test can produce

# The module dataset: counts that are not multiples of the shard size, so last shards are partial.
CONFIG = ShapesConfig(seed=7, size=128, samples_per_shard=25)
COUNTS = {"train": 190, "val": 45, "test": 45}
# Tiny datasets for the determinism / resume / overwrite tests.
TINY = ShapesConfig(seed=3, size=64, samples_per_shard=10)
TINY_COUNTS = {"train": 45, "val": 20, "test": 12}


# ----------------------------------------------------------------------------- helpers


def gen(out: Path, counts: dict[str, int] = TINY_COUNTS, config: ShapesConfig = TINY, **kwargs) -> dict:
    kwargs.setdefault("progress", False)
    return generate_shapes(out, counts, config, **kwargs)


def dir_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a dataset directory (hidden ones included) -> its bytes."""
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def dir_mtimes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(root.iterdir())}


def age(root: Path) -> None:
    """Set every file's mtime to OLD_NS, so any rewrite shows up as a changed mtime."""
    for p in root.iterdir():
        os.utime(p, ns=(OLD_NS, OLD_NS))


def shard_paths(root: Path, split: str) -> list[Path]:
    return sorted(root.glob(f"{split}-*.tar"))


def read_shard(path: Path) -> list[dict]:
    """The samples of one tar shard in order: ``{"__key__", "__members__", ext: bytes}``."""
    samples: list[dict] = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            if not samples or samples[-1]["__key__"] != key:
                samples.append({"__key__": key, "__members__": []})
            samples[-1]["__members__"].append(member.name)
            samples[-1][ext] = tar.extractfile(member).read()
    return samples


def read_split(root: Path, split: str) -> list[dict]:
    return [s for shard in shard_paths(root, split) for s in read_shard(shard)]


def decode_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def pixel(image: np.ndarray, xy) -> np.ndarray:
    """The pixel containing the continuous point ``(x, y)`` (pixel ``i`` covers ``[i, i+1)``)."""
    x, y = xy
    return image[math.floor(y), math.floor(x)]


def close_to(px, rgb, tol: int = 2) -> bool:
    return int(np.abs(np.asarray(px) - np.asarray(rgb)).max()) <= tol


def scene_signature(meta: dict) -> tuple:
    bg = meta["background"]
    objects = sorted(
        (o["kind"], o["colour"], o["size"], tuple(o["centre"]), o["radius"]) for o in meta["objects"]
    )
    return (bg["colour"], bg["style"], tuple(objects))


_COLOUR_WORD_RE = re.compile(
    r"\b(" + "|".join(sorted({w for ws in COLOUR_WORDS.values() for w in ws}, key=len, reverse=True)) + r")\b"
)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes128")
    generate_shapes(root, COUNTS, CONFIG, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def samples(dataset) -> dict[str, list[dict]]:
    """split -> samples (tar order), each with its decoded ``meta``."""
    result = {}
    for split in SPLITS:
        result[split] = read_split(dataset, split)
        for s in result[split]:
            s["meta"] = json.loads(s["json"])
    return result


def all_samples(samples: dict[str, list[dict]]) -> list[dict]:
    return [s for split in SPLITS for s in samples[split]]


# ----------------------------------------------------------------------------- 1. determinism


def test_same_arguments_give_identical_bytes_for_any_worker_count_and_seed_changes_them(tmp_path):
    a, b, c, d = (tmp_path / name for name in ("a", "b", "c", "d"))
    gen(a, workers=1)
    gen(b, workers=1)
    gen(c, workers=2)
    gen(d, config=dataclasses.replace(TINY, seed=TINY.seed + 1), workers=1)
    files = dir_bytes(a)
    assert {n for n in files if n.endswith(".tar")} == {
        f"{s}-{k:06d}.tar" for s, n in TINY_COUNTS.items() for k in range(math.ceil(n / 10))
    }
    assert "index.json" in files
    assert dir_bytes(b) == files, "same arguments in another directory gave different bytes"
    assert dir_bytes(c) == files, "workers=2 gave different bytes than workers=1"
    other = dir_bytes(d)
    assert other.keys() == files.keys()
    for name in files:
        assert other[name] != files[name], f"{name} is the same with another seed"


# ----------------------------------------------------------------------------- 2. captions


def test_every_caption_matches_its_metadata(samples):
    checked = 0
    for s in all_samples(samples):
        meta = s["meta"]
        caption = s["txt"].decode("utf-8")
        assert caption == meta["caption"] == meta["captions"][0]
        assert len(meta["captions"]) == 3
        for text in [caption, *meta["captions"]]:
            assert caption_matches(parse_caption(text), meta), (s["__key__"], text)
            checked += 1
    assert checked == 4 * sum(COUNTS.values())


def test_wrong_captions_do_not_match(samples):
    """Every kind of false statement is caught, so the agreement test above has teeth."""
    mutated = Counter()
    for s in all_samples(samples):
        meta = s["meta"]
        present = {o["colour"] for o in meta["objects"]} | {meta["background"]["colour"]}
        absent = next(c for c in COLOURS if c not in present)
        for text in meta["captions"]:
            # Text level: the first colour word (the first group's colour) becomes an absent colour.
            wrong_text = _COLOUR_WORD_RE.sub(absent, text, count=1)
            assert wrong_text != text
            assert not caption_matches(parse_caption(wrong_text), meta), (text, wrong_text)
            mutated["colour"] += 1

            spec = parse_caption(text)
            first = spec.groups[0]
            wrong_count = dataclasses.replace(first, count=first.count % 3 + 1)
            wrong_spec = dataclasses.replace(spec, groups=[wrong_count, *spec.groups[1:]])
            assert not caption_matches(wrong_spec, meta), text
            mutated["count"] += 1
            if spec.background:
                other = next(c for c in COLOURS if c != spec.background)
                assert not caption_matches(dataclasses.replace(spec, background=other), meta), text
                mutated["background"] += 1
            if spec.relation:
                opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
                assert not caption_matches(dataclasses.replace(spec, relation=opposite[spec.relation]), meta)
                mutated["relation"] += 1
            for i, group in enumerate(spec.groups):
                groups = list(spec.groups)
                if group.size:
                    groups[i] = dataclasses.replace(group, size="small" if group.size == "large" else "large")
                    assert not caption_matches(dataclasses.replace(spec, groups=groups), meta), text
                    mutated["size"] += 1
                if group.position:
                    elsewhere = next(p for p in POSITIONS if p != group.position)
                    groups[i] = dataclasses.replace(group, size=None, position=elsewhere)
                    assert not caption_matches(dataclasses.replace(spec, groups=groups), meta), text
                    mutated["position"] += 1
    assert all(mutated[k] > 10 for k in ("colour", "count", "background", "relation", "size", "position"))


def test_position_prob_sets_how_often_captions_name_positions_and_changes_nothing_else(tmp_path):
    counts = {"train": 30, "val": 0}
    runs = {p: gen(tmp_path / str(p), counts, dataclasses.replace(TINY, position_prob=p)) for p in (0.0, 1.0)}
    default = gen(tmp_path / "default", counts)
    assert "position_prob" not in default["args"]  # datasets made before the option still match
    assert runs[1.0]["args"]["position_prob"] == 1.0
    by_prob = {p: read_split(tmp_path / str(p), "train") for p in runs}
    single = {0.0: 0, 1.0: 0}
    for p, samples in by_prob.items():
        for s in samples:
            meta = json.loads(s["json"])
            for text in meta["captions"]:
                assert caption_matches(parse_caption(text), meta), text
                for group in parse_caption(text).groups:
                    if group.count == 1:
                        single[p] += 1
                        assert (group.position is not None) == (p == 1.0), (p, text)
    assert single[0.0] > 20 and single[1.0] > 20
    assert [s["png"] for s in by_prob[0.0]] == [s["png"] for s in by_prob[1.0]]  # the same scenes
    with pytest.raises(ValueError, match="position-prob"):
        gen(tmp_path / "bad", counts, dataclasses.replace(TINY, position_prob=1.5))


def test_make_data_passes_position_prob_only_when_set():
    def dry_run(*variables):
        return next(line for line in make_dry_run("data", "DATA=/nonexistent", *variables) if " data shapes " in line)

    assert "--position-prob" not in dry_run()
    assert re.search(r"--position-prob 0\.7(\s|$)", dry_run("POSITION_PROB=0.7"))


def test_captions_cover_the_grammar(samples):
    captions = [c for s in all_samples(samples) for c in s["meta"]["captions"]]
    specs = [parse_caption(c) for c in captions]
    groups = [g for spec in specs for g in spec.groups]
    counts = {g.count for g in groups}
    assert {1, 2, 3} <= counts
    assert any(re.search(r"\btwo \w", c) for c in captions)
    assert any(re.search(r"\bthree \w", c) for c in captions)
    assert {g.size for g in groups if g.size} == {"small", "large"}
    assert {spec.relation for spec in specs if spec.relation} == set(RELATIONS)
    assert {g.position for g in groups if g.position} == set(POSITIONS)
    assert {len(spec.groups) for spec in specs} == {1, 2, 3}  # one, two and three noun phrases
    assert any(" on a" in c and c.endswith(" background") for c in captions)
    assert any(" against a" in c and c.endswith(" background") for c in captions)
    assert any(re.search(r", \w+ background$", c) for c in captions)
    assert any(not c.endswith(" background") for c in captions)
    assert len({g.kind for g in groups}) >= 6 and {g.kind for g in groups} <= set(KINDS)
    assert len({g.colour for g in groups}) >= 8
    metas = [s["meta"] for s in all_samples(samples)]
    assert {m["count"] for m in metas} == {1, 2, 3}
    assert {m["background"]["style"] for m in metas} == {"plain", "gradient", "texture"}


def test_relations_and_positions_in_metadata_follow_the_grid(samples):
    for s in all_samples(samples):
        objects = s["meta"]["objects"]
        expected = set()
        for i, a in enumerate(objects):
            (ra, ca), position = a["cell"], a["position"]
            assert position == POSITIONS[3 * ra + ca]
            for j, b in enumerate(objects):
                (rb, cb) = b["cell"]
                if i != j:
                    expected |= {(i, "left of", j)} if ca < cb else set()
                    expected |= {(i, "right of", j)} if ca > cb else set()
                    expected |= {(i, "above", j)} if ra < rb else set()
                    expected |= {(i, "below", j)} if ra > rb else set()
        assert {tuple(r) for r in s["meta"]["relations"]} == expected


# ----------------------------------------------------------------------------- 3. splits


def test_splits_are_disjoint_in_keys_and_scenes(samples):
    signatures = {}
    for split in SPLITS:
        keys = [s["__key__"] for s in samples[split]]
        assert len(keys) == len(set(keys)) == COUNTS[split]
        for s in samples[split]:
            assert s["__key__"].startswith(f"{split}_")
            assert s["meta"]["key"] == s["__key__"] and s["meta"]["split"] == split
        signatures[split] = {scene_signature(s["meta"]) for s in samples[split]}
        assert len(signatures[split]) == COUNTS[split], f"repeated scenes within {split}"
    assert not signatures["train"] & signatures["val"]
    assert not signatures["train"] & signatures["test"]
    assert not signatures["val"] & signatures["test"]


# ----------------------------------------------------------------------------- 4. pixels


def test_object_pixels_carry_the_named_colour_and_objects_fit_without_overlap(samples):
    size = CONFIG.size
    rings = 0
    for s in all_samples(samples):
        meta = s["meta"]
        image = decode_rgb(s["png"])
        assert image.shape == (size, size, 3) and meta["image_size"] == size
        objects = meta["objects"]
        for o in objects:
            rgb = COLOURS[o["colour"]]
            assert list(rgb) == o["rgb"]
            assert close_to(pixel(image, o["anchor"]), rgb), (s["__key__"], o)
            x0, y0, x1, y1 = o["bbox"]
            if o["kind"] == "ring":
                rings += 1
                assert not close_to(pixel(image, o["centre"]), rgb), ("ring hole is filled", s["__key__"], o)
            else:
                assert close_to(pixel(image, ((x0 + x1) / 2, (y0 + y1) / 2)), rgb), (s["__key__"], o)
            (cx, cy), r = o["centre"], o["radius"]
            assert 0 <= cx - r and cx + r <= size and 0 <= cy - r and cy + r <= size, o
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, o
            assert x0 >= cx - r - 0.02 and x1 <= cx + r + 0.02 and y0 >= cy - r - 0.02 and y1 <= cy + r + 0.02
            # The centre lies in the object's grid cell, so the position word is true of the image.
            assert [math.floor(cy * 3 / size), math.floor(cx * 3 / size)] == o["cell"], o
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                assert math.dist(a["centre"], b["centre"]) >= a["radius"] + b["radius"], (s["__key__"], a, b)
        assert meta["background"]["colour"] not in {o["colour"] for o in objects}
    assert rings > 5


# ----------------------------------------------------------------------------- 5. shard format


def test_shards_are_plain_tars_with_png_txt_json_per_key(dataset):
    index = json.loads((dataset / "index.json").read_text())
    assert set(index["splits"]) == set(SPLITS)
    all_tars = {p.name for p in dataset.glob("*.tar")}
    listed = set()
    for split in SPLITS:
        entry = index["splits"][split]
        assert entry["count"] == COUNTS[split]
        names = entry["shards"]
        assert names == [f"{split}-{k:06d}.tar" for k in range(math.ceil(COUNTS[split] / 25))]
        listed |= set(names)
        keys = []
        for k, name in enumerate(names):
            assert SHARD_RE.match(name)
            with tarfile.open(dataset / name) as tar:
                members = tar.getnames()
            assert len(members) % 3 == 0
            shard_keys = [m.split(".")[0] for m in members[::3]]
            for key, triple in zip(shard_keys, zip(*[iter(members)] * 3, strict=True), strict=True):
                assert list(triple) == [f"{key}.json", f"{key}.png", f"{key}.txt"]
            expected = 25 if k < len(names) - 1 else COUNTS[split] - 25 * (len(names) - 1)
            assert len(shard_keys) == expected and 1 <= expected <= 25
            keys += shard_keys
        assert keys == [f"{split}_{i:07d}" for i in range(COUNTS[split])]
    assert all_tars == listed


def test_shards_read_back_with_webdataset(dataset, samples):
    index = json.loads((dataset / "index.json").read_text())
    for split in SPLITS:
        urls = [str(dataset / name) for name in index["splits"][split]["shards"]]
        raw = list(wds.WebDataset(urls, shardshuffle=False))
        assert len(raw) == index["splits"][split]["count"]
        for sample, expected in zip(raw, samples[split], strict=True):
            keys = {k for k in sample if not (k.startswith("__") and k != "__key__")}
            assert keys == {"__key__", "png", "txt", "json"}
            assert sample["__key__"] == expected["__key__"]
            assert sample["png"] == expected["png"] and sample["txt"] == expected["txt"]
            assert json.loads(sample["json"])["key"] == sample["__key__"]
            assert Image.open(io.BytesIO(sample["png"])).format == "PNG"


def test_jpg_format_writes_jpg_members(tmp_path):
    config = ShapesConfig(seed=0, size=64, image_format="jpg", samples_per_shard=4)
    index = gen(tmp_path, {"train": 6, "val": 0}, config)
    assert set(index["splits"]) == {"train"} and index["args"]["format"] == "jpg"
    assert [p.name for p in sorted(tmp_path.glob("*.tar"))] == ["train-000000.tar", "train-000001.tar"]
    samples = read_split(tmp_path, "train")
    assert len(samples) == 6
    for s in samples:
        key = s["__key__"]
        assert s["__members__"] == [f"{key}.jpg", f"{key}.json", f"{key}.txt"]
        image = Image.open(io.BytesIO(s["jpg"]))
        assert image.format == "JPEG" and image.size == (64, 64)


# ----------------------------------------------------------------------------- 6. resume, idempotence


def test_rerun_with_same_arguments_is_a_no_op(tmp_path):
    first = gen(tmp_path)
    before = dir_bytes(tmp_path)
    assert PENDING_NAME not in before
    age(tmp_path)
    again = gen(tmp_path)
    assert again == json.loads(json.dumps(first)) == json.loads(before["index.json"])
    assert dir_mtimes(tmp_path) == {name: OLD_NS for name in before}
    assert dir_bytes(tmp_path) == before


def test_kill_after_the_index_was_written_leaves_nothing_behind_on_rerun(tmp_path):
    gen(tmp_path)
    before = dir_bytes(tmp_path)
    (tmp_path / PENDING_NAME).write_text(json.dumps(TINY.record(TINY_COUNTS)))
    (tmp_path / ".val-000000.tar.xyz.tmp").write_bytes(b"half")
    gen(tmp_path)
    assert dir_bytes(tmp_path) == before and not list(tmp_path.glob(".*"))


def test_resume_after_a_kill_writes_only_the_missing_shards(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    gen(reference)
    gen(killed)
    # The state a kill leaves: no index.json, a .pending.json with the arguments, a missing shard
    # and a temporary file of a shard being written.
    (killed / "index.json").unlink()
    (killed / "train-000002.tar").unlink()
    (killed / "val-000001.tar").unlink()
    (killed / PENDING_NAME).write_text(json.dumps(TINY.record(TINY_COUNTS)))
    (killed / ".train-000002.tar.abc123.tmp").write_bytes(b"half a shard")
    age(killed)
    kept = {p.name for p in killed.glob("*.tar")}

    gen(killed, workers=2)

    assert not (killed / PENDING_NAME).exists() and not list(killed.glob(".*.tmp"))
    assert dir_bytes(killed) == dir_bytes(reference)  # same files, same bytes
    mtimes = dir_mtimes(killed)
    assert all(mtimes[name] == OLD_NS for name in kept), "complete shards were rewritten"
    assert mtimes["train-000002.tar"] != OLD_NS


def test_unfinished_dataset_with_other_arguments_is_refused(tmp_path):
    gen(tmp_path)
    (tmp_path / "index.json").unlink()
    other = dataclasses.replace(TINY, seed=99).record(TINY_COUNTS)
    (tmp_path / PENDING_NAME).write_text(json.dumps(other))
    with pytest.raises(DatasetExistsError, match="overwrite"):
        gen(tmp_path)


def test_other_arguments_raise_unless_overwrite_which_replaces_the_dataset(tmp_path):
    target, fresh = tmp_path / "target", tmp_path / "fresh"
    gen(target)
    before = dir_bytes(target)
    smaller = {"train": 15, "val": 5}
    for counts, config in [
        (smaller, TINY),
        (TINY_COUNTS, dataclasses.replace(TINY, seed=4)),
        (TINY_COUNTS, dataclasses.replace(TINY, size=72)),
    ]:
        with pytest.raises(DatasetExistsError, match="overwrite"):
            gen(target, counts, config)
        assert dir_bytes(target) == before, "a refused run changed the dataset"
    index = gen(target, smaller, overwrite=True)
    gen(fresh, smaller)
    assert dir_bytes(target) == dir_bytes(fresh), "overwrite left files of the previous dataset"
    assert index["args"]["counts"] == smaller
    assert sorted(p.name for p in target.glob("*.tar")) == [
        "train-000000.tar",
        "train-000001.tar",
        "val-000000.tar",
    ]


def test_stray_shards_without_an_index_are_refused(tmp_path):
    gen(tmp_path)
    (tmp_path / "index.json").unlink()
    with pytest.raises(DatasetExistsError):
        gen(tmp_path)


# ----------------------------------------------------------------------------- 7. flip metadata


def test_flip_meta_mirrors_boxes_positions_relations_and_captions(samples):
    size = CONFIG.size
    swap = {"left": "right", "right": "left"}
    for s in samples["val"] + samples["test"]:
        meta = s["meta"]
        snapshot = json.dumps(meta, sort_keys=True)
        flipped = flip_meta(meta)
        assert json.dumps(meta, sort_keys=True) == snapshot, "flip_meta changed its input"
        assert flipped["flipped"] is True
        image = decode_rgb(s["png"])[:, ::-1]
        for o, f in zip(meta["objects"], flipped["objects"], strict=True):
            x0, y0, x1, y1 = o["bbox"]
            assert f["bbox"] == pytest.approx([size - x1, y0, size - x0, y1], abs=0.006)
            for point in ("centre", "anchor"):
                assert f[point] == pytest.approx([size - o[point][0], o[point][1]], abs=0.006)
            assert f["position"] == flip_position(o["position"])
            assert f["cell"] == [o["cell"][0], 2 - o["cell"][1]]
            moved = ("bbox", "centre", "anchor", "position", "cell")
            assert {k: f[k] for k in f if k not in moved} == {k: o[k] for k in o if k not in moved}
            # The flipped metadata is true of the mirrored image.
            assert close_to(pixel(image, f["anchor"]), COLOURS[f["colour"]]), (s["__key__"], f)
        sides = {"left of": "right of", "right of": "left of"}
        assert flipped["relations"] == [[i, sides.get(r, r), j] for i, r, j in meta["relations"]]
        for text, ftext in zip(meta["captions"], flipped["captions"], strict=True):
            assert re.split(r"(\W+)", ftext) == [swap.get(w, w) for w in re.split(r"(\W+)", text)]
            assert caption_matches(parse_caption(ftext), flipped), (text, ftext)
        assert flipped["caption"] == flipped["captions"][0]

        twice = flip_meta(flipped)
        assert twice.pop("flipped") is False
        assert twice == meta


def test_flipping_changes_something_for_sided_samples(samples):
    """Guard against a no-op flip: some captions and positions must actually change."""
    metas = [s["meta"] for s in samples["val"] + samples["test"]]
    flipped = [flip_meta(m) for m in metas]
    assert any(f["captions"] != m["captions"] for m, f in zip(metas, flipped, strict=True))
    assert any(
        fo["position"] != mo["position"]
        for m, f in zip(metas, flipped, strict=True)
        for mo, fo in zip(m["objects"], f["objects"], strict=True)
    )
    # A caption stating a side does not match the unflipped metadata once flipped.
    mismatches = 0
    for m, f in zip(metas, flipped, strict=True):
        for text, ftext in zip(m["captions"], f["captions"], strict=True):
            if ftext != text:
                assert not caption_matches(parse_caption(ftext), m), ftext
                mismatches += 1
    assert mismatches > 5


# ----------------------------------------------------------------------------- 8. CLI


def test_cli_data_shapes_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    cli_main(
        ["data", "shapes", "--out", str(out), "--train", "20", "--val", "5", "--test", "5", "--size", "64"]
    )
    index = json.loads((out / "index.json").read_text())
    counts = {split: entry["count"] for split, entry in index["splits"].items()}
    assert counts == {"train": 20, "val": 5, "test": 5}
    assert index["args"]["size"] == 64 and index["args"]["seed"] == 0
    tars = sorted(p.name for p in out.glob("*.tar"))
    assert tars == ["test-000000.tar", "train-000000.tar", "val-000000.tar"]
    assert len(read_split(out, "train")) == 20
    assert "shapes dataset in" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--train", "-1"], "counts must be >= 0"),
        (["--size", "16"], "at least 32"),
        (["--samples-per-shard", "0"], "samples-per-shard"),
        (["--samples-per-shard", "-5"], "samples-per-shard"),
    ],
)
def test_cli_invalid_arguments_exit_with_a_clear_message(tmp_path, capsys, monkeypatch, args, problem):
    monkeypatch.delenv("T2I_DEBUG", raising=False)
    out = tmp_path / "cli"
    tiny = ["--train", "20", "--val", "5", "--test", "5", "--size", "64"]
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["data", "shapes", "--out", str(out), *tiny, *args])
    message = excinfo.value.code
    assert isinstance(message, str) and "t2i data shapes: error:" in message and problem in message
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("*.tar"))
