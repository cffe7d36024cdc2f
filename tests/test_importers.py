"""Tests for the COCO and folder importers (t2i_lightning.data.importers)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from t2i_lightning.cli import main
from t2i_lightning.data.importers import ImportReport, import_coco, import_folder, infer_split

RED = (200, 30, 30)
SIZE = 32


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes}, keeping the order of the samples in the tar."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def read_all(out: Path, split: str = "train") -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in json.loads((out / "index.json").read_text())["splits"][split]["shards"]:
        samples |= read_shard(out / shard)
    return samples


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def check_images(samples: dict, ext: str = "png", size: int = SIZE) -> None:
    for key, sample in samples.items():
        assert set(sample) == {ext, "txt", "json"}, key
        image = decode(sample[ext])
        assert image.mode == "RGB" and image.size == (size, size), key
        assert json.loads(sample["json"])["key"] == key


# COCO fixture: ids deliberately out of order in the JSON; 9 is missing on disk, 12 is not an image.
COCO_FILES = {
    42: "wide.jpg",
    7: "tall.jpg",
    100: "cmyk.jpg",
    3: "grey.png",
    55: "rgba.png",
    9: "missing.jpg",
    12: "broken.jpg",
}
GOOD_IDS = [3, 7, 42, 55, 100]


def captions_for(image_id: int) -> list[str]:
    return [f"image {image_id} caption {n}" for n in range(5)]


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "coco" / "train2017"
    images.mkdir(parents=True)
    Image.new("RGB", (40, 30), RED).save(images / "wide.jpg", quality=95)
    Image.new("RGB", (30, 50), (20, 120, 220)).save(images / "tall.jpg", quality=95)
    Image.new("CMYK", (40, 30), (0, 200, 200, 0)).save(images / "cmyk.jpg")
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1)), "L").save(images / "grey.png")
    rgba = np.zeros((50, 30, 4), np.uint8)
    rgba[..., 1], rgba[:25, :, 3] = 180, 255  # top half opaque green, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(images / "rgba.png")
    (images / "broken.jpg").write_bytes(b"this is not a jpeg at all\n")
    Image.new("RGB", (40, 30), (0, 0, 0)).save(images / "extra.jpg")  # on disk, not in the JSON
    annotations = []
    for n in range(5):  # captions interleaved across images, in file order per image
        for image_id in COCO_FILES:
            text = captions_for(image_id)[n]
            annotations.append(
                {
                    "image_id": image_id,
                    "id": len(annotations),
                    "caption": f"  {text.upper()}\n" if n == 0 and image_id == 42 else text,
                }
            )
    data = {
        "images": [{"id": i, "file_name": name, "width": 1, "height": 1} for i, name in COCO_FILES.items()],
        "annotations": annotations,
    }
    captions = tmp_path / "coco" / "captions_train2017.json"
    captions.write_text(json.dumps(data))
    return images, captions


def test_coco_import(coco, tmp_path, caplog):
    images, captions = coco
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        report = import_coco(images, captions, out, size=SIZE, progress=False)
    assert isinstance(report, ImportReport) and report.split == "train" and report.written == 5
    assert [name for name, _ in report.skipped] == ["broken.jpg", "missing.jpg"]
    reasons = dict(report.skipped)
    assert "not found" in reasons["missing.jpg"] and "unreadable" in reasons["broken.jpg"]
    assert "broken.jpg" in caplog.text and "missing.jpg" in caplog.text
    assert "broken.jpg" in report.summary() and "5" in report.summary()
    samples = read_all(out)
    assert list(samples) == [f"coco_{i:012d}" for i in GOOD_IDS]  # sorted by image id
    check_images(samples)
    for image_id in GOOD_IDS:
        sample = samples[f"coco_{image_id:012d}"]
        meta = json.loads(sample["json"])
        expected = captions_for(image_id)
        if image_id == 42:
            expected[0] = expected[0].upper()  # stripped, case kept
        assert sample["txt"].decode("utf-8") == expected[0]
        assert meta["captions"] == expected and meta["coco_image_id"] == image_id
        assert meta["file_name"] == COCO_FILES[image_id] and meta["source"] == "coco"
    rgba = np.asarray(decode(samples["coco_000000000055"]["png"]))
    assert rgba[2, SIZE // 2, 1] > 150 and rgba[-3, SIZE // 2].min() > 240  # transparency -> white
    cmyk = np.asarray(decode(samples["coco_000000000100"]["png"]))[SIZE // 2, SIZE // 2]
    assert cmyk[0] > 200 and cmyk[1] < 100  # CMYK (0, 200, 200, 0) is red-ish
    index = json.loads((out / "index.json").read_text())
    entry = index["splits"]["train"]
    assert entry["count"] == 5 and entry["shards"] == ["train-000000.tar"]
    assert [s["file"] for s in entry["skipped"]] == ["broken.jpg", "missing.jpg"]
    assert all(s["reason"] for s in entry["skipped"])


def test_border_keeps_white_and_center_crop_does_not(coco, tmp_path):
    images, captions = coco
    tops = {}
    for mode in ("border", "center-crop"):
        import_coco(images, captions, tmp_path / mode, size=SIZE, resize=mode, progress=False)
        sample = read_all(tmp_path / mode)["coco_000000000042"]  # the 40x30 red image
        tops[mode] = np.asarray(decode(sample["png"]))[0, SIZE // 2]
    assert tops["border"].min() > 240
    assert tops["center-crop"][0] > 150 and tops["center-crop"][1] < 80


def test_worker_count_does_not_change_bytes(coco, tmp_path):
    images, captions = coco
    reports = [
        import_coco(
            images, captions, tmp_path / f"w{w}", size=SIZE, workers=w, samples_per_shard=2, progress=False
        )
        for w in (1, 2)
    ]
    assert reports[0] == ImportReport(**{**vars(reports[1]), "out": reports[0].out})
    assert reports[0].shards == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    # 6 candidates (broken.jpg is only found out while decoding): one shard holds a single sample
    assert [len(read_shard(tmp_path / "w1" / s)) for s in reports[0].shards] == [2, 1, 2]
    for shard in reports[0].shards:
        assert (tmp_path / "w1" / shard).read_bytes() == (tmp_path / "w2" / shard).read_bytes()


def test_second_split_keeps_first_and_reimport_drops_leftovers(coco, tmp_path):
    images, captions = coco
    out = tmp_path / "out"
    import_coco(images, captions, out, size=SIZE, samples_per_shard=2, progress=False)
    assert (out / "train-000002.tar").exists()
    val = captions.with_name("captions_val2017.json")
    val.write_text(captions.read_text())
    report = import_coco(images, val, out, size=SIZE, progress=False)
    assert report.split == "val" and report.shards == ["val-000000.tar"]
    splits = json.loads((out / "index.json").read_text())["splits"]
    assert splits["train"]["count"] == 5 and splits["val"]["count"] == 5
    import_coco(images, captions, out, size=SIZE, progress=False)  # one shard now: old ones go
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "val-000000.tar"]
    assert not list(out.glob(".*.tmp"))


def test_parts_carve_disjoint_splits_that_together_hold_every_image(coco, tmp_path):
    """`--part` splits one captions file into train/val/test (what `make demo-real` does with COCO val)."""
    images, captions = coco
    out = tmp_path / "out"
    for split, part in (("train", "0:0.5"), ("val", "0.5:0.75"), ("test", "0.75:1")):
        main(["data", "coco", "--images", str(images), "--captions", str(captions), "--out", str(out),
              "--split", split, "--part", part, "--size", str(SIZE)])  # fmt: skip
    keys = {split: list(read_all(out, split)) for split in ("train", "val", "test")}
    everything = list(read_all_import(images, captions, tmp_path / "whole"))
    assert keys["train"] + keys["val"] + keys["test"] == everything  # disjoint, in id order, nothing lost
    assert all(keys.values())
    assert json.loads((out / "index.json").read_text())["splits"]["val"]["args"]["part"] == [0.5, 0.75]
    with pytest.raises(SystemExit):
        main(
            [
                "data",
                "coco",
                "--images",
                str(images),
                "--captions",
                str(captions),
                "--out",
                str(out),
                "--part",
                "0.5:0.2",
            ]
        )


def read_all_import(images: Path, captions: Path, out: Path) -> dict:
    import_coco(images, captions, out, size=SIZE, progress=False)
    return read_all(out)


@pytest.mark.parametrize(
    "name, split",
    [
        ("captions_val2017.json", "val"),
        ("captions_train2017.json", "train"),
        ("image_test.json", "test"),
        ("captions.json", "train"),
    ],
)
def test_infer_split(name, split):
    assert infer_split(Path("/x") / name) == split


def test_coco_errors(coco, tmp_path):
    images, captions = coco
    with pytest.raises(FileNotFoundError, match="nope.json"):
        import_coco(images, tmp_path / "nope.json", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="no_images"):
        import_coco(tmp_path / "no_images", captions, tmp_path / "out", progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        import_coco(images, bad, tmp_path / "out", progress=False)


def test_shards_read_with_webdataset(coco, tmp_path):
    images, captions = coco
    out = tmp_path / "out"
    import_coco(images, captions, out, size=SIZE, image_format="jpg", progress=False)
    samples = list(wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False))
    assert len(samples) == 5
    for sample in samples:
        keys = {k for k in sample if not k.startswith("__") or k == "__key__"}
        assert keys == {"__key__", "jpg", "txt", "json"} and "__url__" in sample
        assert decode(sample["jpg"]).size == (SIZE, SIZE)
        assert json.loads(sample["json"])["key"] == sample["__key__"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "folder"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), RED).save(images / "a.png")
    (images / "a.txt").write_text("a red  rectangle\n")
    Image.new("RGB", (30, 50), (0, 0, 200)).save(images / "sub" / "b.JPG")
    (images / "sub" / "b.txt").write_text("a blue one\nsecond caption\n")
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(images / "deep.png")  # 16-bit greyscale
    (images / "deep.txt").write_text("a grey image")
    Image.new("RGB", (40, 30)).save(images / "c.webp")  # no caption at all
    Image.new("RGB", (40, 30)).save(images / "d.bmp")
    (images / "d.txt").write_text("   \n")  # whitespace-only caption = missing
    (images / "notes.md").write_text("not an image")
    return images


def test_folder_sidecar_captions(folder, tmp_path):
    report = import_folder(folder, tmp_path / "out", size=SIZE, resize="center-crop", progress=False)
    assert report.written == 3 and report.split == "train"
    assert report.skipped == [("c.webp", "no caption"), ("d.bmp", "no caption")]
    samples = read_all(tmp_path / "out")
    assert list(samples) == ["a_png", "deep_png", "sub_b_JPG"]
    check_images(samples)
    assert samples["a_png"]["txt"] == b"a red rectangle"
    meta = json.loads(samples["sub_b_JPG"]["json"])
    assert meta["captions"] == ["a blue one", "second caption"] and meta["file"] == "sub/b.JPG"
    assert meta["source"] == "folder"
    grey = np.asarray(decode(samples["deep_png"]["png"]))
    assert abs(int(grey[5, 5, 0]) - round(40000 / 65535 * 255)) <= 1


def test_folder_csv_captions(folder, tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text(
        'file,caption\nsub/b.JPG,"first, with comma"\nmissing.png,gone\nsub/b.JPG,second\n'
        "c.webp,a black image\nd.bmp,  \n"
    )
    report = import_folder(folder, tmp_path / "out", captions=table, size=SIZE, progress=False)
    assert report.written == 2
    skipped = dict(report.skipped)
    assert (
        set(skipped) == {"missing.png", "a.png", "deep.png", "d.bmp"}
        and "no such image" in skipped["missing.png"]
    )
    samples = read_all(tmp_path / "out")
    check_images(samples)
    assert samples["sub_b_JPG"]["txt"] == b"first, with comma"
    assert json.loads(samples["sub_b_JPG"]["json"])["captions"] == ["first, with comma", "second"]
    assert samples["c_webp"]["txt"] == b"a black image"


def test_folder_jsonl_captions(folder, tmp_path):
    table = tmp_path / "captions.jsonl"
    rows = [
        {"file": "a.png", "caption": "red"},
        {"file": "a.png", "caption": "still red"},
        {"file": "nowhere/x.jpg", "caption": "gone"},
    ]
    table.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    report = import_folder(folder, tmp_path / "out", captions=table, split="val", size=SIZE, progress=False)
    assert report.written == 1 and report.shards == ["val-000000.tar"]
    assert "nowhere/x.jpg" in dict(report.skipped)
    samples = read_all(tmp_path / "out", "val")
    check_images(samples)
    assert json.loads(samples["a_png"]["json"])["captions"] == ["red", "still red"]


def test_folder_errors(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        import_folder(tmp_path / "nothing_here", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="caps.csv"):
        import_folder(folder, tmp_path / "out", captions=tmp_path / "caps.csv", progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,text\na.png,red\n")
    with pytest.raises(ValueError, match="'file' and 'caption'"):
        import_folder(folder, tmp_path / "out", captions=bad, progress=False)


# Names where per-directory and whole-path sorting can disagree: "a-b.jpg" < "a.jpg" < "a/x.jpg" as
# paths, though "a" < "a-b.jpg" as names; digits sort as text ("a10" < "a2"); "a b", "a-b" and "a_b"
# all make the key "a_b_jpg", so the walk order also decides which one gets the plain key.
NESTED = [
    "B.png",
    "a b.jpg",
    "a-b.jpg",
    "a.jpg",
    "a/b/c.png",
    "a/x.jpg",
    "a10.jpg",
    "a2.jpg",
    "a_b.jpg",
    "b/1.jpg",
]


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    root = tmp_path / "nested"
    for n, rel in enumerate(reversed(NESTED)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (20 * n, 100, 50)).save(root / rel)
        (root / rel).with_suffix(".txt").write_text(f"picture {rel}\n")
    Image.new("RGB", (8, 6)).save(root / "a" / "uncaptioned.png")
    return root


def eager_reference(root: Path, out: Path) -> ImportReport:
    """What import_folder wrote before it streamed: every path listed and sorted at once, every item built."""
    from t2i_lightning.data import importers
    from t2i_lightning.data.import_writer import shard_options, write_split

    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in importers.FOLDER_EXTENSIONS and p.is_file()
    )
    items, skipped, used = [], [], set()
    for rel in files:
        sidecar = (root / rel).with_suffix(".txt")
        texts = [sidecar.read_text().strip()] if sidecar.is_file() else []  # one line each here
        if not texts:
            skipped.append((rel, "no caption"))
            continue
        key = importers._folder_key(rel, used)
        items.append((key, str(root / rel), rel, texts, {"file": rel, "source": "folder"}))
    args = {
        "importer": "folder",
        "images": str(root),
        "captions": None,
        **shard_options(SIZE, "border", "png", 3),
    }
    return write_split(out, "train", items, skipped, args, workers=1, progress=False)


def test_folder_stream_writes_the_bytes_of_sorting_every_path_at_once(nested, tmp_path):
    streamed = import_folder(
        nested, tmp_path / "stream", size=SIZE, samples_per_shard=3, workers=2, progress=False
    )
    eager = eager_reference(nested, tmp_path / "eager")
    assert streamed == ImportReport(**{**vars(eager), "out": streamed.out})
    assert streamed.skipped == [("a/uncaptioned.png", "no caption")] and len(streamed.shards) == 4
    for shard in eager.shards:
        assert (tmp_path / "stream" / shard).read_bytes() == (tmp_path / "eager" / shard).read_bytes()
    samples = read_all(tmp_path / "stream")
    assert [json.loads(s["json"])["file"] for s in samples.values()] == NESTED
    assert list(samples)[1:3] == ["a_b_jpg", "a_b_jpg_2"] and "a_b_jpg_3" in samples


def test_folder_import_is_lazy_with_few_shard_jobs_in_flight(tmp_path, monkeypatch):
    """12 directories x 2 images, one image per shard, 2 workers: the walk runs ahead of the writers by
    at most 2 jobs per worker, and the first job starts before most directories have been listed."""
    import os
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from t2i_lightning.data import import_writer

    root = tmp_path / "many"
    for d in range(12):
        (root / f"d{d:02d}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (4, 4), (d * 20, i * 100, 0)).save(root / f"d{d:02d}" / f"{i}.png")
            (root / f"d{d:02d}" / f"{i}.txt").write_text(f"image {d} {i}")
    lock, state = (
        threading.Lock(),
        {"submitted": 0, "finished": 0, "most_in_flight": 0, "listed": 0, "listed_at_start": []},
    )
    scandir, shard_job = os.scandir, import_writer._shard_job

    def counting_scandir(path):
        state["listed"] += 1
        return scandir(path)

    class CountingPool(ThreadPoolExecutor):  # threads, so that the counters are shared
        def submit(self, fn, *args):
            with lock:
                state["submitted"] += 1
                state["most_in_flight"] = max(state["most_in_flight"], state["submitted"] - state["finished"])
            return super().submit(fn, *args)

    def slow_job(job):
        state["listed_at_start"].append(state["listed"])
        time.sleep(0.01)
        result = shard_job(job)
        with lock:
            state["finished"] += 1
        return result

    monkeypatch.setattr(os, "scandir", counting_scandir)
    monkeypatch.setattr(import_writer, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(import_writer, "_shard_job", slow_job)
    report = import_folder(root, tmp_path / "out", size=8, samples_per_shard=1, workers=2, progress=False)
    assert report.written == 24 and len(report.shards) == 24 and state["submitted"] == 24
    assert 2 <= state["most_in_flight"] <= 4
    # 13 directories to list; before the first job ends: 2 listings that find an image, one of the output
    # directory (stale temporaries), then the root, d00 and d01, which hold the first 4 jobs' images
    assert min(state["listed_at_start"]) <= 6 and state["listed"] >= 2 + 1 + 13


def test_folder_parts_split_a_caption_table_without_false_missing_rows(tmp_path):
    root = tmp_path / "parts"
    root.mkdir()
    rows = ["file,caption", "gone.png,a missing image"]
    for n in range(6):
        Image.new("RGB", (4, 4), (n * 40, 0, 0)).save(root / f"{n}.png")
        rows.append(f"{n}.png,image {n}")
    table = tmp_path / "captions.csv"
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    reports = [
        import_folder(root, out, captions=table, split=split, size=8, part=part, progress=False)
        for split, part in (("train", (0.0, 0.5)), ("val", (0.5, 1.0)))
    ]
    assert [list(read_all(out, split)) for split in ("train", "val")] == [
        ["0_png", "1_png", "2_png"],
        ["3_png", "4_png", "5_png"],
    ]
    assert all(report.skipped == [("gone.png", "in captions file but no such image")] for report in reports)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the caption index is gone


def test_many_skipped_files_print_a_short_summary_but_index_lists_all(folder, tmp_path, capsys, caplog):
    table = tmp_path / "captions.csv"
    table.write_text("file,caption\na.png,red\n" + "".join(f"missing/{n:03d}.png,gone\n" for n in range(30)))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        main(
            [
                "data",
                "folder",
                "--images",
                str(folder),
                "--captions",
                str(table),
                "--out",
                str(out),
                "--size",
                "8",
            ]
        )
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) <= 13 and printed[1] == "skipped 34:"  # 30 missing + 4 images without captions
    assert printed[-1] == "  ... and 24 more (all listed in index.json)"
    assert len(caplog.records) <= 11 and "24 more" in caplog.records[-1].getMessage()
    skipped = json.loads((out / "index.json").read_text())["splits"]["train"]["skipped"]
    assert len(skipped) == 34 and {s["file"] for s in skipped} >= {f"missing/{n:03d}.png" for n in range(30)}
