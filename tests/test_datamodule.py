"""The shard DataModule base: batch layout, skipping and counting bad samples, clear path errors,
deterministic evaluation streams, rank/worker splitting, and caption-consistent flips."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_lightning.data.datamodule import ShardDataModule
from t2i_lightning.data.image_io import encode_image
from t2i_lightning.data.shapes.captions import caption_matches, parse_caption
from t2i_lightning.data.shards import ShardSpecError, recorded_shard_counts, resolve_shards, write_shard
from t2i_lightning.data.streams import RankWorkerShards


def _all_batches(loader):
    return list(iter(loader))


def _keys(batches):
    return [k for b in batches for k in b["key"]]


def test_batches_have_documented_keys_shapes_and_dtypes(shapes_dir):
    dm = ShardDataModule(
        train=str(shapes_dir), val=str(shapes_dir), image_size=32, batch_size=8, num_workers=0, epoch_size=32
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "caption", "key", "meta", "skipped", "skipped_shards", "shard_samples"}
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].min() < -0.5 and batch["image"].max() > 0.5  # really spans the range
    assert all(isinstance(c, str) and c for c in batch["caption"])
    assert all(k.startswith("train_") for k in batch["key"])
    assert all(m["caption"] == c for m, c in zip(batch["meta"], batch["caption"], strict=True))
    assert type(batch["skipped"]) is int and batch["skipped"] == 0  # a Python int: reading it never syncs with the device
    assert len(dm.train_dataloader()) == 32 // 8


@pytest.mark.parametrize("device, pinned", [("cpu", False), ("cuda", True)])
def test_on_an_accelerator_batches_are_pinned_and_training_workers_persist(shapes_dir, device, pinned):
    dm = ShardDataModule(train=str(shapes_dir), val=str(shapes_dir), image_size=32, batch_size=8, num_workers=1)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=SimpleNamespace(root_device=torch.device(device)))
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert (train.pin_memory, val.pin_memory) == (pinned, pinned)
    assert (train.persistent_workers, val.persistent_workers) == (pinned, False)  # validation workers end after each run


def test_image_matches_the_shard_png_resized(shapes_dir):
    dm = ShardDataModule(train=None, val=str(shapes_dir), image_size=64, batch_size=4, num_workers=0)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    import tarfile

    first = resolve_shards(str(shapes_dir), "val")[0]
    with tarfile.open(first) as tar:
        png = tar.extractfile(f"{batch['key'][0]}.png").read()
    expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 127.5 - 1
    got = batch["image"][0].permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() < 1e-5  # 64px shards at image_size 64: no resize


def test_validation_stream_is_deterministic_complete_and_split_across_workers(shapes_dir):
    index = json.loads((shapes_dir / "index.json").read_text())
    dm = ShardDataModule(train=None, val=str(shapes_dir), image_size=16, batch_size=5, num_workers=2)
    dm.setup("validate")
    first, second = _keys(_all_batches(dm.val_dataloader())), _keys(_all_batches(dm.val_dataloader()))
    assert sorted(first) == sorted(second) and first == second
    assert len(first) == len(set(first)) == index["splits"]["val"]["count"]


def test_rank_split_gives_each_shard_to_exactly_one_rank():
    urls = [f"s{i}.tar" for i in range(7)]
    seen = [u["url"] for rank in range(3) for u in RankWorkerShards(urls, rank, 3, resampled=False)]
    assert sorted(seen) == sorted(urls)
    stream = iter(RankWorkerShards(urls, 1, 3, resampled=True, seed=0))
    drawn = {next(stream)["url"] for _ in range(200)}
    assert drawn == set(urls[1::3])


def _write_bad_shard(path, good_png: bytes):
    samples = [
        {"__key__": "ok_0", "png": good_png, "txt": b"a red circle"},
        {"__key__": "bad_image", "png": b"this is not a png", "txt": b"a red circle"},
        {"__key__": "no_caption", "png": good_png},
        {"__key__": "empty_caption", "png": good_png, "txt": b"   "},
        {"__key__": "ok_1", "png": good_png, "txt": b"a blue square"},
    ]
    write_shard(path, samples)


def test_corrupt_and_incomplete_samples_are_skipped_and_counted(tmp_path, caplog):
    good = encode_image(Image.new("RGB", (20, 20), (200, 10, 10)))
    _write_bad_shard(tmp_path / "val-000000.tar", good)
    dm = ShardDataModule(train=None, val=str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    dm.setup("validate")
    with caplog.at_level("WARNING"):
        batches = _all_batches(dm.val_dataloader())
    assert _keys(batches) == ["ok_0", "ok_1"]
    assert sum(int(b["skipped"]) for b in batches) == 3
    assert [b["skipped_shards"] for b in batches if b["skipped_shards"]] == [{str(tmp_path / "val-000000.tar"): 3}]
    text = caplog.text
    assert "bad_image" in text and "no_caption" in text and "empty_caption" in text


def _copy_split(shapes_dir, out, split):
    """``split``'s shards of the shapes fixture and its index.json, copied to ``out``."""
    out.mkdir(exist_ok=True)
    (out / "index.json").write_bytes((shapes_dir / "index.json").read_bytes())
    for shard in resolve_shards(str(shapes_dir), split):
        (out / Path(shard).name).write_bytes(Path(shard).read_bytes())
    return out


def _val_batches(root, workers=0):
    dm = ShardDataModule(train=None, val=str(root), image_size=16, batch_size=4, num_workers=workers)
    dm.setup("validate")
    return _all_batches(dm.val_dataloader())


def _member_offsets(shard):
    """Byte offset of each sample's first tar member, in order."""
    offsets = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            offsets.setdefault(member.name.split(".", 1)[0], member.offset)
    return list(offsets.values())


@pytest.mark.parametrize("cut", ["mid-member", "member boundary"])
def test_a_truncated_shard_counts_every_sample_it_lost_once_under_its_path(tmp_path, shapes_dir, caplog, cut):
    """Before: each read of a cut tar counted 1-2 skips however many samples it lost (a shard cut to 40% lost
    60, the log said 4), a tar cut between members counted none, and a shard was named twice (once as a
    ``<_io.BufferedReader ...>``)."""
    root = _copy_split(shapes_dir, tmp_path / "data", "val")
    shard = root / "val-000001.tar"  # 16 of the 40 val samples
    data = shard.read_bytes()
    end = int(len(data) * 0.4) if cut == "mid-member" else _member_offsets(shard)[5]
    shard.write_bytes(data[:end])
    with caplog.at_level("WARNING"):
        batches = _val_batches(root)
    read, skipped = len(_keys(batches)), sum(b["skipped"] for b in batches)
    assert read + skipped == 40  # every sample is either read or counted
    assert [b["skipped_shards"] for b in batches if b["skipped_shards"]] == [{str(shard): skipped}]
    assert "of its 16 samples read" in caplog.text and "BufferedReader" not in caplog.text
    if cut == "member boundary":  # a tar that simply ends: no read error at all, yet 11 samples are gone
        assert skipped == 11 and "the tar ends early): 5 of its 16 samples read, 11 counted" in caplog.text
    else:
        assert skipped >= 9


def test_shard_aligned_batches_count_a_cut_shards_lost_samples_on_that_shard(tmp_path, shapes_dir):
    """The extraction's stream (one output per input shard) counts what a cut shard lost, on that shard."""
    from t2i_lightning.data.datamodule import collate
    from t2i_lightning.data.decode import decode_image_caption
    from t2i_lightning.data.streams import ShardAlignedBatches

    root = _copy_split(shapes_dir, tmp_path / "data", "val")
    cut = root / "val-000001.tar"
    cut.write_bytes(cut.read_bytes()[: _member_offsets(cut)[5]])
    urls = resolve_shards(str(root), "val")
    batches = list(ShardAlignedBatches(urls, lambda s: decode_image_caption(s, 16), collate, 4))
    by_shard = {url: (sum(len(b["key"]) for b in batches if b["shard"] == url),
                      sum(b["skipped"] for b in batches if b["shard"] == url)) for url in urls}  # fmt: skip
    assert by_shard == {urls[0]: (16, 0), str(cut): (5, 11), urls[2]: (8, 0)}


def test_without_a_recorded_count_a_truncated_shard_counts_its_read_errors_as_a_lower_bound(tmp_path, shapes_dir, caplog):
    root = _copy_split(shapes_dir, tmp_path / "data", "val")
    (root / "index.json").unlink()
    shard = root / "val-000000.tar"
    shard.write_bytes(shard.read_bytes()[: len(shard.read_bytes()) // 2 + 100])
    with caplog.at_level("WARNING"):
        batches = _val_batches(root)
    assert sum(b["skipped"] for b in batches) >= 1 and 24 < len(_keys(batches)) < 40
    assert "records no count" in caplog.text


def test_recorded_shard_counts_from_the_writers_list_or_derived_where_exact(tmp_path, shapes_dir):
    assert recorded_shard_counts(shapes_dir) == {
        **{f"train-{k:06d}.tar": 16 for k in range(6)}, "val-000000.tar": 16, "val-000001.tar": 16,
        "val-000002.tar": 8, "test-000000.tar": 16,
    }  # fmt: skip
    index = json.loads((shapes_dir / "index.json").read_text())
    for entry in index["splits"].values():  # an index written before the counts were listed
        del entry["shard_counts"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert recorded_shard_counts(tmp_path) == recorded_shard_counts(shapes_dir)
    index["splits"]["val"]["skipped"] = [{"file": "x.png", "reason": "unreadable"}]  # which shard lost it: unknown
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert "val-000000.tar" not in recorded_shard_counts(tmp_path) and "train-000000.tar" in recorded_shard_counts(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    assert recorded_shard_counts(tmp_path) == {}


def test_a_skip_rate_over_the_limit_stops_training_naming_the_bad_shards():
    from t2i_lightning.training.data_health import SkippedSamplesLogger, SkipRateError

    class Module:
        def log(self, *args, **kwargs):
            pass

    logger = SkippedSamplesLogger(max_skip_rate=0.05, min_samples=100)
    clean = {"key": ["k"] * 20, "skipped": 0, "skipped_shards": {}}
    dirty = {"key": ["k"] * 18, "skipped": 2, "skipped_shards": {"data/bad-000007.tar": 2}}
    for batch in [clean, clean, clean, clean, dirty]:  # 2 of 100 read: under 5 %
        logger.on_train_batch_end(None, Module(), None, batch, 0)
    resumed = SkippedSamplesLogger(max_skip_rate=0.05, min_samples=100)
    resumed.load_state_dict(logger.state_dict())  # the count survives a resume
    worse = {"key": ["k"] * 10, "skipped": 10, "skipped_shards": {"data/bad-000007.tar": 10}}
    with pytest.raises(
        SkipRateError, match=r"12 of 120 training samples were skipped .*bad-000007.tar \(12\)"
    ):
        resumed.on_train_batch_end(None, Module(), None, worse, 0)


def test_training_on_cut_shards_measures_the_share_lost_and_names_each_bad_shard_once(tmp_path, shapes_dir):
    """2 of the 6 training shards cut to 10% of their bytes: about 30% of the samples are gone, and the skip
    rate says so (before: each read counted 1-2, so the rate stayed near 1% and training ran on)."""
    from t2i_lightning.training.data_health import SkippedSamplesLogger, SkipRateError

    root = _copy_split(shapes_dir, tmp_path / "data", "train")
    cut = [root / "train-000001.tar", root / "train-000004.tar"]
    for shard in cut:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 10])
    dm = ShardDataModule(train=str(root), val=None, image_size=16, batch_size=8, num_workers=0, epoch_size=400)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    taken, skipped = sum(b["shard_samples"] for b in batches), sum(b["skipped"] for b in batches)
    assert 0.2 < skipped / taken < 0.4  # judged at the shards: the shuffle buffer read ahead of the batches
    logger = SkippedSamplesLogger(max_skip_rate=0.05, min_samples=taken)  # judged once, on the whole epoch
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    with pytest.raises(SkipRateError) as error:
        for batch in batches:
            logger.on_train_batch_end(None, module, None, batch, 0)
    message = str(error.value)
    assert all(message.count(str(shard)) == 1 for shard in cut) and "BufferedReader" not in message


@pytest.mark.parametrize("spec", ["{root}/nope", "{root}/train-{{000000..000003}}.tar", "{root}/*.tar", ""])
def test_missing_path_fails_at_setup_naming_it(tmp_path, spec):
    spec = spec.format(root=tmp_path)
    dm = ShardDataModule(train=spec, val=None)
    with pytest.raises(ShardSpecError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert "data.train" in message and "make data" in message
    if spec:
        assert str(tmp_path) in message


def test_a_directory_gives_the_asked_split_and_never_falls_back_to_another(shapes_dir, tmp_path):
    import shutil

    val = resolve_shards(str(shapes_dir), "val")
    assert val and all(Path(u).name.startswith("val-") for u in val)
    train_only = tmp_path / "train_only"
    train_only.mkdir()
    for shard in Path(shapes_dir).glob("train-*.tar"):
        shutil.copy(shard, train_only / shard.name)
    with pytest.raises(ShardSpecError, match=r"No 'val-\*\.tar' shards in .*train_only' \(it holds train shards\)"):
        resolve_shards(str(train_only), "val")
    dm = ShardDataModule(train=str(train_only), val=str(train_only), num_workers=0)
    with pytest.raises(ShardSpecError, match="data.val"):  # validation on training images is refused
        dm.setup("fit")
    assert len(resolve_shards(str(train_only))) == len(list(train_only.glob("*.tar")))  # no split asked: all
    plain = tmp_path / "img2dataset"  # shards named without a split: the directory is the split
    plain.mkdir()
    shutil.copy(next(Path(shapes_dir).glob("train-*.tar")), plain / "00000.tar")
    assert resolve_shards(str(plain), "val") == [str(plain / "00000.tar")]


def test_hflip_mirrors_image_and_keeps_caption_true(shapes_dir):
    options = dict(
        train=str(shapes_dir), val=None, image_size=64, batch_size=16, num_workers=0, epoch_size=64
    )
    plain = ShardDataModule(**options, shuffle_buffer=0)
    flipped = ShardDataModule(**options, shuffle_buffer=0, hflip=True)
    torch.manual_seed(0)
    plain.setup("fit")
    flipped.setup("fit")
    a = {
        k: (i, c, m)
        for b in _all_batches(plain.train_dataloader())
        for k, i, c, m in zip(b["key"], b["image"], b["caption"], b["meta"], strict=True)
    }
    torch.manual_seed(0)
    b = {
        k: (i, c, m)
        for bb in _all_batches(flipped.train_dataloader())
        for k, i, c, m in zip(bb["key"], bb["image"], bb["caption"], bb["meta"], strict=True)
    }
    common = set(a) & set(b)
    was_flipped = [k for k in common if b[k][2].get("flipped")]
    assert was_flipped and len(was_flipped) < len(common)
    for key in was_flipped:
        assert torch.equal(b[key][0], a[key][0].flip(-1))
        assert caption_matches(parse_caption(b[key][1]), b[key][2])
    sided = [k for k in was_flipped if "left" in a[k][1] or "right" in a[k][1]]
    for key in sided:
        assert b[key][1] != a[key][1]
