"""The HDF5 shard store: export, read back, verify, resume, and refuse bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from mtlue.data import open_source
from mtlue.data.base import Batch, Sample, Source, TaskSpec
from mtlue.data.shards import ShardSource
from mtlue.errors import IntegrityError, SourceError, StoreError
from mtlue.store import StoreWriter, export_source, read_manifest, update_manifest, verify_store


class TinySource(Source):
    """37 train / 11 test RGB 8×8 samples with a masked binary task, a multiclass task and a regression task."""

    name = "tiny"
    tasks = (TaskSpec("smile", "binary", 2), TaskSpec("digit", "multiclass", 5), TaskSpec("age", "regression", 1))
    image_shape = (8, 8, 3)

    def __init__(self, seed=0, bad_label_at=None, index_of=None):
        self.seed, self.bad_label_at = seed, bad_label_at
        self.index_of = index_of or (lambda split, p: (0 if split == "train" else 1000) + 3 * p)

    def size(self, split):
        return {"train": 37, "test": 11}[split]

    def get(self, split, position):
        rng = np.random.default_rng([self.seed, position, split == "test"])
        image = rng.integers(0, 256, size=self.image_shape, dtype=np.uint8)
        digit = position % 5 if position != self.bad_label_at else 5
        labels = {"smile": position % 2, "digit": digit, "age": np.float32(20 + position / 4)}
        return Sample(self.index_of(split, position), image, labels, {"smile": position % 3 != 0, "age": True})


def shard_hashes(store):
    return {s["file"]: s["sha256"] for r in read_manifest(store)["splits"].values() for s in r["shards"]}


def file_sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def tiny_store(tmp_path):
    store = str(tmp_path / "store")
    export_source(TinySource(), store, shard_size=10, progress=False)
    return store


@pytest.mark.parametrize("decoded_shards", [0, 2, 4])
def test_store_reads_back_the_exact_bytes_labels_masks_and_indices(tiny_store, monkeypatch, decoded_shards):
    """The same samples whether a shard's images are decoded once per process or read one by one."""
    import mtlue.data.shards as shards

    monkeypatch.setattr(shards, "IMAGE_CACHE_BYTES", decoded_shards * 10 * int(np.prod(TinySource.image_shape)))
    source, store = TinySource(), open_source(tiny_store)
    assert isinstance(store, ShardSource)
    assert store.tasks == source.tasks and store.image_shape == source.image_shape
    assert store.splits() == ("train", "test") and store.size("train") == 37
    assert len(read_manifest(tiny_store)["splits"]["train"]["shards"]) == 4
    for split in ("train", "test"):
        for p in range(source.size(split)):
            a, b = source.get(split, p), store.get(split, p)
            assert a.index == b.index and b.image.dtype == np.uint8 and np.array_equal(a.image, b.image)
            assert a.labels["digit"] == b.labels["digit"] and a.labels["age"] == b.labels["age"]
            assert b.mask["smile"] == a.mask["smile"] and b.mask["digit"] is True
        # batches that straddle shard boundaries
        expected = next(source.batches(split, 64))
        got = list(store.batches(split, 7, start=3))
        assert np.array_equal(np.concatenate([g.images for g in got]), expected.images[3:])
        assert np.array_equal(np.concatenate([g.index for g in got]), expected.index[3:])
        for task in ("smile", "digit", "age"):
            labels, masks = store.label_array(split, task)
            assert np.array_equal(labels, expected.labels[task]) and np.array_equal(masks, expected.masks[task])


class DenseSource(TinySource):
    """TinySource plus a per-pixel segmentation task (labels of shape (8, 8))."""

    tasks = TinySource.tasks + (TaskSpec("parts", "segmentation", 4),)

    def get(self, split, position):
        sample = super().get(split, position)
        sample.labels["parts"] = (sample.image[..., 0] % 4).astype(np.int64)
        return sample


def test_dense_labels_round_trip_through_shards_and_vds(tmp_path):
    store = str(tmp_path / "dense")
    export_source(DenseSource(), store, shard_size=10, progress=False)
    reader, reference = ShardSource(store), next(DenseSource().batches("train", 64))
    assert np.array_equal(reader.get("train", 25).labels["parts"], reference.labels["parts"][25])
    assert np.array_equal(np.concatenate([b.labels["parts"] for b in reader.batches("train", 9)]),
                          reference.labels["parts"])
    with h5py.File(os.path.join(store, "train.h5"), "r") as f:
        assert f["labels/parts"].shape == (37, 8, 8) and np.array_equal(f["labels/parts"][:], reference.labels["parts"])
    result = CliRunner().invoke(main, ["inspect", store])
    assert result.exit_code == 0 and "dense map" in result.output


def test_dataloader_with_two_workers_yields_the_source_items(tiny_store):
    store = ShardSource(tiny_store)
    store.get("train", 0)  # an open handle in the parent must not leak into the workers
    loader = torch.utils.data.DataLoader(store.dataset("train"), batch_size=8, num_workers=2)
    batches = list(loader)
    reference = next(TinySource().batches("train", 64))
    images = torch.cat([b["image"] for b in batches])
    assert images.dtype == torch.uint8 and images.shape == (37, 3, 8, 8)
    assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), reference.images)
    assert np.array_equal(torch.cat([b["index"] for b in batches]).numpy(), reference.index)
    for task in ("smile", "digit", "age"):
        assert np.array_equal(torch.cat([b["labels"][task] for b in batches]).numpy(), reference.labels[task])
        assert np.array_equal(torch.cat([b["masks"][task] for b in batches]).numpy(), reference.masks[task])
    copy = pickle.loads(pickle.dumps(store))  # open h5py handles are dropped, not pickled
    assert np.array_equal(copy.get("train", 36).image, reference.images[36])


def test_split_vds_reads_with_plain_h5py_from_any_directory(tiny_store, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    reference = next(TinySource().batches("train", 64))
    with h5py.File(os.path.join(tiny_store, "train.h5"), "r") as f:
        assert f["images"].shape == (37, 8, 8, 3) and f["images"].dtype == np.uint8
        assert np.array_equal(f["images"][:], reference.images)
        assert list(f["labels"]) == ["smile", "digit", "age"]
        assert np.array_equal(f["index"][:], reference.index)
        assert np.array_equal(f["masks/smile"][:], reference.masks["smile"])
    with h5py.File(os.path.join(tiny_store, "train", "shard-00000-of-00004.h5"), "r") as f:
        assert f.attrs["schema"] == "mtlue-shard/1" and f.attrs["num_shards"] == 4
        assert f["images"].compression == "gzip" and f["images"].fletcher32 and f["images"].shuffle
        assert json.loads(f.attrs["tasks"])[1] == {"name": "digit", "kind": "multiclass", "num_classes": 5, "flip_safe": False}


def test_a_flipped_byte_fails_inspect_verify_naming_the_shard(tiny_store):
    runner = CliRunner()
    ok = runner.invoke(main, ["inspect", tiny_store, "--verify"])
    assert ok.exit_code == 0, ok.output
    assert "none (clean export)" in ok.output and "verified" in ok.output and "0:0.50" in ok.output
    shard = os.path.join(tiny_store, "train", "shard-00002-of-00004.h5")
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(shard, "wb").write(bytes(data))
    bad = runner.invoke(main, ["inspect", tiny_store, "--verify"])
    assert bad.exit_code == 1
    assert "train/shard-00002-of-00004.h5" in bad.output and "sha256" in bad.output


def test_verify_names_a_missing_shard_and_duplicate_indices(tmp_path, tiny_store):
    os.remove(os.path.join(tiny_store, "test", "shard-00000-of-00002.h5"))
    with pytest.raises(IntegrityError, match="test/shard-00000-of-00002.h5: shard is missing"):
        verify_store(tiny_store)
    duplicated = str(tmp_path / "dup")
    export_source(TinySource(index_of=lambda split, p: p % 30), duplicated, shard_size=10, progress=False)
    with pytest.raises(IntegrityError, match=r"train/shard-00003-of-00004.h5 .*index 0 appears twice"):
        verify_store(duplicated)


KILLED_EXPORT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_store import TinySource
from mtlue.store import StoreWriter
source = TinySource()
def slow_batches(start, stop):
    for lo in range(start, stop):
        if start >= 20:
            time.sleep(0.05)
        yield from source.batches("train", 1, lo, lo + 1)
with StoreWriter({store!r}, source.tasks, source.image_shape) as writer:
    writer.write_split("train", 37, 10, slow_batches, progress=False)
    writer.finish()
"""


def test_a_killed_export_leaves_nothing_a_reader_accepts_and_resume_finishes_it(tmp_path):
    store = str(tmp_path / "killed")
    script = KILLED_EXPORT.format(tests=os.path.dirname(__file__), store=store)
    proc = subprocess.Popen([sys.executable, "-c", script])
    tmp_shard = os.path.join(store, "train", "shard-00002-of-00004.h5.tmp")
    deadline = time.time() + 60
    while not os.path.exists(tmp_shard) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the export finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    names = sorted(os.listdir(os.path.join(store, "train")))
    assert not os.path.exists(os.path.join(store, "manifest.json"))
    assert all(n.endswith((".tmp", ".sha256")) or n.startswith(("shard-00000", "shard-00001")) for n in names)
    with pytest.raises(SourceError, match="no manifest.json"):
        open_source(store)
    with pytest.raises(StoreError, match="not a complete mtlue store"):
        ShardSource(store)

    calls = []

    def counted_batches(start, stop):
        calls.append(start)
        return TinySource().batches("train", 4, start, stop)

    with StoreWriter(store, TinySource.tasks, TinySource.image_shape, resume=True) as writer:
        writer.write_split("train", 37, 10, counted_batches, progress=False)
        writer.finish()
    assert calls == [20, 30]  # shards 0 and 1 were complete and checksummed
    fresh = str(tmp_path / "fresh")
    export_source(TinySource(), fresh, shard_size=10, progress=False, splits=["train"])
    assert shard_hashes(store) == shard_hashes(fresh)
    assert not [n for n in os.listdir(os.path.join(store, "train")) if n.endswith(".tmp")]
    verify_store(store)


def test_an_error_inside_make_batches_removes_everything_the_writer_created(tmp_path):
    store = str(tmp_path / "failed")

    def failing_batches(start, stop):  # shard 0 completes, shard 1 breaks half-way
        yield from TinySource().batches("train", 4, start, stop if start < 10 else start + 4)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        with StoreWriter(store, TinySource.tasks, TinySource.image_shape) as writer:
            writer.write_split("train", 37, 10, failing_batches, progress=False)
    assert not os.path.exists(store)


def test_an_interrupt_keeps_finished_shards_for_resume(tmp_path):
    store = str(tmp_path / "interrupted")

    def interrupted_batches(start, stop):
        if start >= 20:
            yield from TinySource().batches("train", 4, start, start + 4)
            raise KeyboardInterrupt
        yield from TinySource().batches("train", 4, start, stop)

    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(store, TinySource.tasks, TinySource.image_shape) as writer:
            writer.write_split("train", 37, 10, interrupted_batches, progress=False)
    assert sorted(os.listdir(os.path.join(store, "train"))) == [
        "shard-00000-of-00004.h5", "shard-00000-of-00004.h5.sha256",
        "shard-00001-of-00004.h5", "shard-00001-of-00004.h5.sha256"]
    with pytest.raises(StoreError, match="not a complete mtlue store"):
        ShardSource(store)


def test_the_same_seed_gives_byte_identical_shards(tmp_path):
    stores = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        stores[name] = str(tmp_path / name)
        export_source(open_source("shapes:n=40,size=16", seed=seed), stores[name], shard_size=16, progress=False)
    assert shard_hashes(stores["a"]) == shard_hashes(stores["b"])
    assert shard_hashes(stores["a"]) != shard_hashes(stores["c"])
    for rel in shard_hashes(stores["a"]):
        assert file_sha(os.path.join(stores["a"], rel)) == file_sha(os.path.join(stores["b"], rel))


def test_a_label_outside_its_classes_is_refused_and_leaves_no_store(tmp_path):
    store = str(tmp_path / "bad")
    with pytest.raises(StoreError, match=r"task 'digit': label 5 of sample index 69 is outside 0..4"):
        export_source(TinySource(bad_label_at=23), store, shard_size=10, progress=False)
    assert not os.path.exists(store)


def test_bad_images_are_refused_naming_the_shard(tmp_path):
    def float_batches(start, stop):
        batch = next(TinySource().batches("train", 64, start, stop))
        yield Batch(batch.index, batch.images.astype(np.float32), batch.labels, batch.masks)

    with pytest.raises(StoreError, match="shard-00000-of-00001.h5: images must be a uint8 array"):
        with StoreWriter(tmp_path / "floats", TinySource.tasks, TinySource.image_shape) as writer:
            writer.write_split("train", 37, 100, float_batches, progress=False)
    assert not os.path.exists(tmp_path / "floats")


def test_export_refuses_a_non_empty_directory_without_overwrite(tmp_path):
    runner = CliRunner()
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    for args in ([], ["--overwrite"]):  # --overwrite replaces stores only, never other files
        result = runner.invoke(main, ["export", "digits", str(target), "--quiet", *args])
        assert result.exit_code == 1 and str(target) in result.output
        assert os.listdir(target) == ["notes.txt"] and (target / "notes.txt").read_text() == "keep me"
    user_h5 = tmp_path / "h5" / "train.h5"
    user_h5.parent.mkdir()
    h5py.File(user_h5, "w").close()
    refused = runner.invoke(main, ["export", "digits", str(user_h5.parent), "--quiet", "--overwrite"])
    assert refused.exit_code == 1 and "train.h5 is not part of an mtlue store" in refused.output
    assert user_h5.exists()
    store = str(tmp_path / "store")
    first = runner.invoke(main, ["export", "digits", store, "--shard-size", "4000", "--quiet"])
    assert first.exit_code == 0, first.output
    assert "train 6000 samples in 2 shards" in first.output
    clean, stored = open_source("digits"), open_source(store)
    for a, b in zip(clean.batches("test", 1000), stored.batches("test", 1000)):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.index, b.index)
        assert all(np.array_equal(a.labels[t.name], b.labels[t.name]) for t in clean.tasks)
    before = shard_hashes(store)
    again = runner.invoke(main, ["export", "digits", store, "--quiet"])
    assert again.exit_code == 1 and "--overwrite" in again.output and shard_hashes(store) == before
    replaced = runner.invoke(main, ["export", "digits", store, "--quiet", "--overwrite"])
    assert replaced.exit_code == 0 and sorted(os.listdir(os.path.join(store, "train"))) == [
        "shard-00000-of-00001.h5", "shard-00000-of-00001.h5.sha256"]
    verify_store(store)


def test_update_manifest_adds_a_key_and_keeps_the_shard_records(tiny_store):
    before = read_manifest(tiny_store)
    update_manifest(tiny_store, "verification", verify_store(tiny_store))
    after = read_manifest(tiny_store)
    assert after["verification"]["ok"] and after["splits"] == before["splits"]
    with pytest.raises(StoreError, match="splits"):
        update_manifest(tiny_store, "splits", {})
    assert not [n for n in os.listdir(tiny_store) if n.endswith(".tmp")]


def test_export_with_a_worker_process_writes_the_same_bytes(tmp_path):
    source = open_source("shapes:n=300,size=16,seed=5")
    single = export_source(source, str(tmp_path / "one"), shard_size=128, progress=False)
    pooled = export_source(source, str(tmp_path / "pool"), shard_size=128, progress=False, workers=1)
    for split in ("train", "test"):
        assert [s["sha256"] for s in single["splits"][split]["shards"]] == \
               [s["sha256"] for s in pooled["splits"][split]["shards"]]
