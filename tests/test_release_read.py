"""Reading a published release back: image folder, WebDataset and Parquet give the store's exact samples."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import mtlue
from mtlue.data import open_source, parse_spec
from mtlue.data.base import Sample, Source, TaskSpec
from mtlue.data.release import ReleaseSource, fidelity_warnings, verify_release
from mtlue.data.shards import ShardSource
from mtlue.errors import ConfigError, IntegrityError, SourceError, StoreError
from mtlue.store.export import export_source

SHAPES = "shapes:n=40,size=16,seed=1"
FORMATS = ["imagefolder", "webdataset", pytest.param("parquet", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("pyarrow"), reason="pyarrow not installed"))]


class GrayTinySource(Source):
    """29 train / 7 test grayscale 8×6 samples: a binary task missing on every third sample, a multiclass
    task and a regression task missing on every fourth."""

    name = "graytiny"
    tasks = (TaskSpec("smile", "binary", 2), TaskSpec("digit", "multiclass", 5), TaskSpec("age", "regression", 1))
    image_shape = (8, 6, 1)

    def size(self, split):
        return {"train": 29, "test": 7}[split]

    def get(self, split, position):
        rng = np.random.default_rng([position, split == "test"])
        image = rng.integers(0, 256, size=self.image_shape, dtype=np.uint8)
        labels = {"smile": 1 - position % 2, "digit": position % 5, "age": np.float32(20 + position / 3)}
        return Sample((0 if split == "train" else 500) + 7 * position, image, labels,
                      {"smile": position % 3 != 0, "age": position % 4 != 1})


# ---- a writer following the release contract (until mtlue.release writes them) ----------------

def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format="PNG", optimize=False,
                                                                            compress_level=6)
    return buffer.getvalue()


def label_of(task, sample):
    if not sample.mask.get(task.name, True):
        return None
    value = np.asarray(sample.labels[task.name])
    return int(value) if task.is_classification else float(np.float32(value))


def write_release(store_dir: str, out: str, fmt: str, per_file: int = 16) -> str:
    """OUT as /tmp/release_format.md lays it out (small tars and parts, to cross their borders)."""
    source = ShardSource(store_dir)
    os.makedirs(out)
    splits = {}
    for split in source.splits():
        os.makedirs(os.path.join(out, split))
        samples = [source.get(split, p) for p in range(source.size(split))]
        files = []
        if fmt == "imagefolder":
            with open(os.path.join(out, split, "metadata.csv"), "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["file_name", "index", *(t.name for t in source.tasks)])
                for s in samples:
                    name = f"{s.index:08d}.png"
                    with open(os.path.join(out, split, name), "wb") as image_file:
                        image_file.write(png_bytes(s.image))
                    labels = [label_of(t, s) for t in source.tasks]
                    writer.writerow([name, s.index, *("" if v is None else repr(v) for v in labels)])
                    files.append(f"{split}/{name}")
            files.insert(0, f"{split}/metadata.csv")
        for k, lo in enumerate(range(0, len(samples), per_file)):
            chunk = samples[lo:lo + per_file]
            if fmt == "webdataset":
                files.append(f"{split}/shard-{k:06d}.tar")
                with tarfile.open(os.path.join(out, files[-1]), "w", format=tarfile.USTAR_FORMAT) as tar:
                    for s in chunk:
                        record = {"index": s.index, "labels": {t.name: label_of(t, s) for t in source.tasks}}
                        for member, data in ((f"{s.index:08d}.png", png_bytes(s.image)),
                                             (f"{s.index:08d}.json", json.dumps(record).encode())):
                            info = tarfile.TarInfo(member)
                            info.size = len(data)
                            tar.addfile(info, io.BytesIO(data))
            elif fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                files.append(f"{split}/part-{k:05d}.parquet")
                images = [{"bytes": png_bytes(s.image), "path": f"{s.index:08d}.png"} for s in chunk]
                columns = {"image": pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                           "index": pa.array([s.index for s in chunk], pa.int64())}
                for t in source.tasks:
                    columns[t.name] = pa.array([label_of(t, s) for s in chunk],
                                               pa.int64() if t.is_classification else pa.float32())
                pq.write_table(pa.table(columns), os.path.join(out, files[-1]))
        splits[split] = {"count": len(samples), "files": files}
    manifest = source.manifest
    release = {"schema": "mtlue-release/1", "format": fmt, "tasks": manifest["tasks"],
               "image_shape": manifest["image_shape"], "splits": splits, "protection": manifest.get("protection"),
               "verification": manifest.get("verification"), "source": manifest.get("source"),
               "store_manifest_sha256": file_sha(os.path.join(store_dir, "manifest.json")),
               "image_encoding": "png", "software": {"mtlue": mtlue.__version__}}
    with open(os.path.join(out, "release.json"), "w") as fh:
        json.dump(release, fh, indent=2)
    with open(os.path.join(out, "README.md"), "w") as fh:
        fh.write("# a test release\n")
    write_sums(out)
    return out


def write_sums(out: str) -> None:
    names = sorted(os.path.relpath(os.path.join(root, n), out).replace(os.sep, "/")
                   for root, _, files in os.walk(out) for n in files if n != "SHA256SUMS")
    with open(os.path.join(out, "SHA256SUMS"), "w") as fh:
        fh.writelines(f"{file_sha(os.path.join(out, n))}  {n}\n" for n in names)


def file_sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    shapes = export_source(open_source(SHAPES), str(root / "shapes"), shard_size=16, progress=False, spec=SHAPES)
    assert shapes["splits"]["train"]["count"] == 40
    export_source(GrayTinySource(), str(root / "gray"), shard_size=10, progress=False)
    return {"shapes": str(root / "shapes"), "gray": str(root / "gray")}


@pytest.fixture(scope="module")
def releases(stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    return {(name, fmt): write_release(store, str(root / f"{name}-{fmt}"), fmt)
            for name, store in stores.items() for fmt in ("imagefolder", "webdataset", "parquet")
            if fmt != "parquet" or __import__("importlib").util.find_spec("pyarrow")}


def copy_release(release: str, tmp_path) -> str:
    import shutil

    return shutil.copytree(release, str(tmp_path / "copy"))


# ---- reading --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["shapes", "gray"])
def test_release_gives_the_stores_images_labels_masks_and_indices_in_order(stores, releases, name, fmt):
    store, release = ShardSource(stores[name]), open_source(releases[name, fmt])
    assert isinstance(release, ReleaseSource) and release.format == fmt
    assert release.tasks == store.tasks and release.image_shape == store.image_shape
    assert release.splits() == store.splits()
    for split in store.splits():
        assert release.size(split) == store.size(split)
        expected, got = next(store.batches(split, 1000)), next(release.batches(split, 1000))
        assert np.array_equal(got.index, expected.index) and got.images.dtype == np.uint8
        assert np.array_equal(got.images, expected.images)
        assert np.array_equal(release.index_array(split), expected.index)
        for task in store.tasks:
            mask = expected.masks[task.name]
            assert np.array_equal(got.masks[task.name], mask)
            # a missing label is written as an empty cell and read back as 0
            assert np.array_equal(got.labels[task.name], np.where(mask, expected.labels[task.name], 0))
            assert got.labels[task.name].dtype == expected.labels[task.name].dtype
            labels, masks = release.label_array(split, task.name)
            assert np.array_equal(labels, got.labels[task.name]) and np.array_equal(masks, mask)
        last = store.size(split) - 1
        for position in sorted({0, min(17, last), last}, reverse=True):  # out of order, across tar and part borders
            sample, reference = release.get(split, position), store.get(split, position)
            assert sample.index == reference.index and np.array_equal(sample.image, reference.image)
            assert sample.mask == {t.name: bool(reference.mask[t.name]) for t in store.tasks}
        pieces = list(release.batches(split, 7, 3, 30))
        assert np.array_equal(np.concatenate([b.index for b in pieces]), expected.index[3:30])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_release_identifies_as_its_files_and_names_its_origin_and_protection(stores, releases, tmp_path, fmt):
    release_dir = releases["shapes", fmt]
    assert parse_spec(release_dir) == ("release", release_dir)
    release, store = open_source(release_dir), ShardSource(stores["shapes"])
    sums_text = open(os.path.join(release_dir, "SHA256SUMS")).read()
    assert release.content_digest() == hashlib.sha256(sums_text.encode()).hexdigest()
    assert release.origin_content() == store.origin_content() is not None
    assert release.origin_record()["spec"] == SHAPES and release.protection == store.protection
    sums = dict(reversed(line.split("  ")) for line in sums_text.splitlines())
    from mtlue.verify import check_victim_inputs, data_identity

    # victims' fingerprints key on the released bytes: a data file, or the images of a split, one entry each
    shards = release.manifest["splits"]["train"]["shards"]
    assert {s["file"] for s in shards} == ({"train/metadata.csv", "train/ (40 image files)"} if fmt == "imagefolder"
                                           else {n for n in sums if n.startswith("train/")})
    assert all(s["sha256"] == sums[s["file"]] for s in shards if s["file"] in sums)
    identity = data_identity(release)["store"]
    assert len(identity) == len(shards) + len(release.manifest["splits"]["test"]["shards"])
    changed = copy_release(release_dir, tmp_path)
    with open(os.path.join(changed, "SHA256SUMS")) as fh:
        lines = fh.readlines()
    last_file = "train/" + sorted(os.listdir(os.path.join(changed, "train")))[-1]
    at = next(i for i, line in enumerate(lines) if line == f"{line[:64]}  {last_file}\n")
    lines[at] = ("1" if lines[at][0] == "0" else "0") + lines[at][1:]  # as if that file held other bytes
    with open(os.path.join(changed, "SHA256SUMS"), "w") as fh:
        fh.writelines(lines)
    assert data_identity(open_source(changed))["store"] != identity
    check_victim_inputs(release, open_source(SHAPES))
    with pytest.raises(ConfigError, match="not the source the store was made from"):
        check_victim_inputs(release, open_source("shapes:n=40,size=16,seed=2"))


def test_open_store_is_a_torch_dataset_over_a_store_or_a_release_and_loads_in_workers(stores, releases):
    from torch.utils.data import DataLoader

    expected = mtlue.open_store(stores["gray"], "train")
    for release_dir in (releases["gray", "webdataset"], releases["gray", "imagefolder"]):
        dataset = mtlue.open_store(release_dir)
        assert isinstance(dataset, torch.utils.data.Dataset) and len(dataset) == 29
        item = dataset[4]
        assert item["image"].shape == (1, 8, 6) and item["image"].dtype == torch.uint8
        assert item["labels"]["digit"].dtype == torch.int64 and item["labels"]["age"].dtype == torch.float32
        pickle.loads(pickle.dumps(dataset))  # after reading: no open handle travels
        loaded = next(iter(DataLoader(dataset, batch_size=29, num_workers=1)))
        reference = next(iter(DataLoader(expected, batch_size=29)))
        assert torch.equal(loaded["image"], reference["image"]) and torch.equal(loaded["index"], reference["index"])
        assert torch.equal(loaded["masks"]["smile"], reference["masks"]["smile"])
        known = reference["masks"]["age"]
        assert torch.equal(loaded["labels"]["age"][known], reference["labels"]["age"][known])
        assert next(dataset.source.batches("test", 4)).images.shape == (4, 8, 6, 1)
    with pytest.raises(SourceError, match="not an mtlue store"):
        mtlue.open_store("digits")


def test_a_parquet_release_without_pyarrow_names_the_extra(releases, monkeypatch):
    if ("gray", "parquet") not in releases:
        pytest.skip("pyarrow not installed")
    import builtins

    real_import = builtins.__import__

    def without_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_pyarrow)
    with pytest.raises(StoreError, match=r"pip install 'mtlue\[release\]'"):
        open_source(releases["gray", "parquet"]).index_array("train")


# ---- checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_verify_release_names_an_edited_a_missing_and_an_extra_file(releases, tmp_path, fmt):
    release_dir = copy_release(releases["gray", fmt], tmp_path)
    summary = verify_release(release_dir)
    listed = open(os.path.join(release_dir, "SHA256SUMS")).readlines()
    assert summary["format"] == fmt and summary["files"] == len(listed)
    victim = os.path.join(release_dir, "train", sorted(os.listdir(os.path.join(release_dir, "train")))[1])
    original = open(victim, "rb").read()
    with open(victim, "r+b") as fh:
        fh.seek(len(original) // 2)
        fh.write(bytes([original[len(original) // 2] ^ 1]))
    with pytest.raises(IntegrityError, match=os.path.basename(victim) + ".*changed after the release"):
        verify_release(release_dir)
    os.remove(victim)
    with pytest.raises(IntegrityError, match=os.path.basename(victim) + ": listed in SHA256SUMS but missing"):
        verify_release(release_dir)
    with open(victim, "wb") as fh:
        fh.write(original)
    verify_release(release_dir)
    with open(os.path.join(release_dir, "test", "notes.txt"), "w") as fh:
        fh.write("hello")
    with pytest.raises(IntegrityError, match="notes.txt: not listed in SHA256SUMS"):
        verify_release(release_dir)


def test_fidelity_warnings_flag_a_jpeg_and_a_resized_image_but_not_a_faithful_release(releases, stores, tmp_path):
    assert fidelity_warnings(releases["shapes", "imagefolder"]) == []
    assert fidelity_warnings(releases["shapes", "webdataset"]) == []
    assert fidelity_warnings(stores["shapes"]) == []
    release_dir = copy_release(releases["shapes", "imagefolder"], tmp_path)
    first, second = (os.path.join(release_dir, "train", f"{i:08d}.png") for i in range(2))
    Image.open(first).convert("RGB").save(first, format="JPEG", quality=90)  # keeps its .png name
    Image.open(second).resize((12, 12)).save(second)
    warnings = fidelity_warnings(release_dir)
    assert len(warnings) == 2
    assert "1 of 40 images are JPEG" in warnings[0] and "00000000.png" in warnings[0] and "protection" in warnings[0]
    assert "12x12 RGB" in warnings[1] and "16x16 RGB" in warnings[1] and "00000001.png" in warnings[1]
    with pytest.raises(StoreError, match="00000001.png: image is 12x12"):
        open_source(release_dir).get("train", 1)
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(3):
        Image.new("L", (10, 10), i).save(plain / f"{i}.png")
    assert fidelity_warnings(str(plain)) == []
    Image.new("L", (10, 10)).save(plain / "3.jpg", quality=95)
    assert [w for w in fidelity_warnings(str(plain)) if "JPEG" in w and "3.jpg" in w]


# ---- a reviewer trains on what was published --------------------------------------------------

@pytest.mark.parametrize("fmt", ["webdataset"])
def test_training_on_a_release_gives_the_same_test_metrics_as_on_its_store(stores, releases, tmp_path, fmt):
    from cli import main

    runs = {}
    for label, data in (("store", stores["shapes"]), ("release", releases["shapes", fmt])):
        out = str(tmp_path / label)
        result = CliRunner().invoke(main, ["train", data, "--test", SHAPES, "--backbone", "small_cnn", "--epochs", "1",
                                           "--batch-size", "16", "--quiet", "--out", out])
        assert result.exit_code == 0, result.output
        runs[label] = json.load(open(os.path.join(out, "metrics.json")))
    assert [e["test"] for e in runs["release"]["epochs"]] == [e["test"] for e in runs["store"]["epochs"]]
    assert runs["release"]["floor"] == runs["store"]["floor"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_what_mtlue_release_writes_reads_back_as_the_store(stores, tmp_path, fmt):
    """The same check on the real writer, once mtlue.release exists (its keyword for the format adapted)."""
    import inspect

    release_store = getattr(pytest.importorskip("mtlue.release"), "release_store", None)
    if release_store is None:
        pytest.skip("mtlue.release has no release_store yet")
    accepted = inspect.signature(release_store).parameters
    keyword = next(k for k in ("format", "fmt", "release_format", "kind") if k in accepted)
    options = {keyword: fmt, **({"progress": False} if "progress" in accepted else {})}
    out = str(tmp_path / "R")
    release_store(stores["gray"], out, **options)
    verify_release(out)
    assert fidelity_warnings(out) == []
    store, release = ShardSource(stores["gray"]), open_source(out)
    for split in store.splits():
        expected, got = next(store.batches(split, 1000)), next(release.batches(split, 1000))
        assert np.array_equal(got.index, expected.index) and np.array_equal(got.images, expected.images)
        for task in store.tasks:
            mask = expected.masks[task.name]
            assert np.array_equal(got.masks[task.name], mask)
            assert np.array_equal(got.labels[task.name], np.where(mask, expected.labels[task.name], 0))


def test_verification_of_a_release_gives_the_same_rows_as_of_its_store(stores, releases, tmp_path):
    from mtlue.profiles import build_profiles
    from mtlue.train import TrainConfig
    from mtlue.verdict import VerdictRules
    from mtlue.verify import VerifyConfig, run_verification, verification_summary

    base = TrainConfig(backbone="small_cnn", epochs=1, batch_size=16)
    config = VerifyConfig(profiles=build_profiles([{"name": "plain"}], base, ("ew",), "--profile"), seeds=(0,),
                          defenses=("none",), rules=VerdictRules())
    store, release = (verification_summary(run_verification(open_source(data), open_source(SHAPES), config,
                                                            str(tmp_path / label), "cpu", progress=False))
                      for label, data in (("store", stores["shapes"]), ("release", releases["shapes", "imagefolder"])))
    assert (release["verdict"], release["groups"]) == (store["verdict"], store["groups"])
    assert os.path.isfile(tmp_path / "release" / "report.md")
