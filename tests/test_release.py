"""`release_store`: image folder, WebDataset and Parquet releases that reload byte-identical through
the consumer's own library, with checksums, a dataset card and Croissant metadata."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from mtlue.data import open_source
from mtlue.data.base import Sample, Source, TaskSpec
from mtlue.data.shards import ShardSource
from mtlue.errors import ConfigError, StoreError
from mtlue.protect import protect_config
from mtlue.protect.driver import protect_source
from mtlue.release import FORMATS, release_store
from mtlue.store import export_source, update_manifest

METADATA_FILES = {"release.json", "README.md", "croissant.json", "SHA256SUMS"}


class GraySource(Source):
    """23 train / 7 test grayscale 8×8 samples; `smile` and `age` have missing labels."""

    name = "gray"
    tasks = (TaskSpec("smile", "binary", 2), TaskSpec("digit", "multiclass", 5), TaskSpec("age", "regression", 1))
    image_shape = (8, 8, 1)

    def size(self, split):
        return {"train": 23, "test": 7}[split]

    def get(self, split, position):
        rng = np.random.default_rng([position, split == "test"])
        labels = {"smile": position % 2, "digit": position % 5, "age": np.float32(20.1 + position / 3)}
        index = (0 if split == "train" else 500) + 2 * position
        return Sample(index, rng.integers(0, 256, self.image_shape, dtype=np.uint8), labels,
                      {"smile": position % 3 != 0, "age": position % 4 != 1})


@pytest.fixture(scope="module")
def gray_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("gray") / "store"
    export_source(GraySource(), str(store), shard_size=10, progress=False)
    return store


@pytest.fixture(scope="module")
def protected_store(tmp_path_factory):
    """The train split of a 40-image shapes set protected with LSP (no training needed)."""
    store = tmp_path_factory.mktemp("protected") / "P"
    config = protect_config(dict(method="lsp", batch_size=32, seed=1))
    protect_source(open_source("shapes:n=40,size=16,seed=1"), store, config, torch.device("cpu"), progress=False,
                   shard_size=16)
    return store


def stored(store, split):
    """index, images, {task: labels with None where masked} of a split, read straight from the store."""
    source = ShardSource(store)
    batches = list(source.batches(split, 1024))
    labels = {}
    for task in source.tasks:
        values = np.concatenate([b.labels[task.name] for b in batches])
        masks = np.concatenate([b.masks[task.name] for b in batches])
        labels[task.name] = [v.item() if m else None for v, m in zip(values, masks)]
    return (np.concatenate([b.index for b in batches]), np.concatenate([b.images for b in batches]), labels)


def pixels(image, channels):
    array = np.asarray(image)
    return array[..., None] if channels == 1 else array


def same_label(loaded, expected):
    if expected is None:
        return loaded is None or (isinstance(loaded, float) and math.isnan(loaded))
    return np.float32(loaded) == np.float32(expected)


def check_split(rows, store, split):
    """rows: (index, PIL image, {task: label}) as a consumer's library gave them back."""
    index, images, labels = stored(store, split)
    assert [r[0] for r in rows] == index.tolist()
    for position, (_, image, row_labels) in enumerate(rows):
        assert np.array_equal(pixels(image, images.shape[-1]), images[position])
        for task, values in labels.items():
            assert same_label(row_labels[task], values[position]), (split, position, task)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_folder_loads_through_datasets_byte_identical_with_labels_and_gaps(gray_store, tmp_path):
    import datasets

    out = tmp_path / "R"
    release = release_store(gray_store, out, "imagefolder")
    assert release["splits"]["test"]["count"] == 7 and release["image_shape"] == [8, 8, 1]
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    assert set(loaded) == {"train", "test"}
    for split in ("train", "test"):
        table = loaded[split]
        assert "label" not in table.column_names  # the labels are ours, not directory names
        rows = [(r["index"], r["image"], r) for r in table]
        check_split(rows, gray_store, split)
    assert (out / "train" / "metadata.csv").read_text().splitlines()[1] == "00000000.png,0,,0,20.1"


def test_webdataset_round_trips_through_the_webdataset_library(protected_store, gray_store, tmp_path, monkeypatch):
    import webdataset as wds
    from PIL import Image

    import mtlue.release.writers as writers

    monkeypatch.setattr(writers, "TAR_SAMPLES", 10)
    for store in (protected_store, gray_store):
        out = tmp_path / store.name
        release = release_store(store, out, "webdataset")
        for split, record in release["splits"].items():
            assert len(record["files"]) == math.ceil(record["count"] / 10)
            urls = [str(out / f) for f in record["files"]]
            as_stored = wds.handle_extension("png", lambda data: Image.open(io.BytesIO(data)))  # "pil" forces RGB
            rows = [(s["json"]["index"], s["png"], s["json"]["labels"])
                    for s in wds.WebDataset(urls, shardshuffle=False).decode(as_stored)]
            check_split(rows, store, split)


def test_parquet_loads_through_datasets_with_the_image_column_decoded(protected_store, gray_store, tmp_path,
                                                                      monkeypatch):
    import datasets
    from PIL import Image

    import mtlue.release.writers as writers

    monkeypatch.setattr(writers, "PARQUET_ROWS", 16)
    out = tmp_path / "R"
    release = release_store(gray_store, out, "parquet")
    assert release["splits"]["train"]["files"] == ["train/part-00000.parquet", "train/part-00001.parquet"]
    loaded = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    for split in ("train", "test"):
        table = loaded[split]
        assert isinstance(table.features["image"], datasets.Image)
        assert table.features["digit"].dtype == "int64" and table.features["age"].dtype == "float32"
        rows = [(r["index"], r["image"], r) for r in table]
        assert isinstance(rows[0][1], Image.Image)
        check_split(rows, gray_store, split)
    release_store(protected_store, tmp_path / "P", "parquet")
    table = datasets.load_dataset("parquet", data_dir=str(tmp_path / "P"), cache_dir=str(tmp_path / "hf"))["train"]
    check_split([(r["index"], r["image"], r) for r in table], protected_store, "train")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_store_gives_a_byte_identical_release(protected_store, tmp_path, fmt):
    first = release_store(protected_store, tmp_path / "A", fmt)
    second = release_store(protected_store, tmp_path / "B", fmt)
    assert first == second
    assert (tmp_path / "A" / "SHA256SUMS").read_bytes() == (tmp_path / "B" / "SHA256SUMS").read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_checksums_cover_every_file_and_the_release_holds_only_the_contract_files(protected_store, tmp_path, fmt):
    out = tmp_path / "R"
    release = release_store(protected_store, out, fmt)
    assert json.loads((out / "release.json").read_text()) == release
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert set(files) == METADATA_FILES | {f for r in release["splits"].values() for f in r["files"]}
    assert not any(p.is_symlink() for p in out.rglob("*"))
    listed = [line.split("  ", 1) for line in (out / "SHA256SUMS").read_text().splitlines()]
    assert [name for _, name in listed] == [f for f in files if f != "SHA256SUMS"]
    assert all(sha(out / name) == digest for digest, name in listed)
    assert release["splits"].keys() == {"train"}  # a protected store releases its train split only
    assert release["protection"]["method"] == "lsp" and release["image_encoding"] == "png"
    assert "P.work" not in (out / "release.json").read_text()  # nothing points at the generator's work dir


@pytest.mark.parametrize("fmt", FORMATS)
def test_croissant_metadata_validates_and_its_records_are_the_stored_samples(gray_store, tmp_path, fmt):
    import mlcroissant

    out = tmp_path / "R"
    release_store(gray_store, out, fmt)
    metadata = json.loads((out / "croissant.json").read_text())
    assert metadata["conformsTo"] == "http://mlcommons.org/croissant/1.0" and metadata["@type"] == "sc:Dataset"
    dataset = mlcroissant.Dataset(jsonld=str(out / "croissant.json"))  # raises on invalid metadata
    assert [r.name for r in dataset.metadata.record_sets] == ["train", "test"]
    records = list(dataset.records("test"))
    index, images, labels = stored(gray_store, "test")
    assert len(records) == len(index)
    for position, record in enumerate(records):
        image = np.asarray(record["test/image"])
        if image.ndim == 3:  # mlcroissant hands a file set's PNGs back as RGB: three copies of the gray value
            assert (image == image[..., :1]).all()
            image = image[..., 0]
        assert np.array_equal(image[..., None], images[position])
        if fmt != "webdataset":  # WebDataset labels live in the .json members (described, not extracted)
            assert record["test/index"] == index[position]
            assert same_label(record["test/digit"], labels["digit"][position])


def test_an_existing_release_is_replaced_only_with_overwrite_and_only_if_it_is_one(gray_store, tmp_path):
    out = tmp_path / "R"
    release_store(gray_store, out, "webdataset")
    with pytest.raises(StoreError, match=f"{out}: exists and is not empty; pass --overwrite"):
        release_store(gray_store, out, "imagefolder")
    release_store(gray_store, out, "imagefolder", overwrite=True)
    assert json.loads((out / "release.json").read_text())["format"] == "imagefolder"
    assert not list((out / "train").glob("*.tar"))

    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.png").write_bytes(b"mine")
    with pytest.raises(StoreError, match="holds no release.json"):
        release_store(gray_store, other, "imagefolder", overwrite=True)
    assert (other / "holiday.png").read_bytes() == b"mine"
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(StoreError, match="symbolic link"):
        release_store(gray_store, link, "imagefolder", overwrite=True)
    assert (out / "release.json").is_file()
    with pytest.raises(ConfigError, match="outside the store"):
        release_store(gray_store, gray_store / "release", "imagefolder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R", "link", "photos"]


def test_a_failure_mid_write_leaves_no_release_and_no_temp_dir(gray_store, tmp_path, monkeypatch):
    import mtlue.release.writers as writers

    def broken(store, split, out_dir, tick):
        os.makedirs(os.path.join(out_dir, split, "half"))  # something written before the failure
        raise OSError("disk full")

    monkeypatch.setitem(writers.WRITERS, "imagefolder", broken)
    with pytest.raises(OSError, match="disk full"):
        release_store(gray_store, tmp_path / "R", "imagefolder")
    assert list(tmp_path.iterdir()) == []

    release_store(gray_store, tmp_path / "R", "webdataset")
    before = sha(tmp_path / "R" / "SHA256SUMS")
    with pytest.raises(OSError, match="disk full"):
        release_store(gray_store, tmp_path / "R", "imagefolder", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"] and sha(tmp_path / "R" / "SHA256SUMS") == before


def test_a_missing_release_library_is_a_config_error_naming_the_extra(gray_store, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(ConfigError, match=r"--format webdataset needs the release extra: pip install 'mtlue\[rel"):
        release_store(gray_store, tmp_path / "R", "webdataset")
    with pytest.raises(ConfigError, match="--format 'zip'"):
        release_store(gray_store, tmp_path / "R", "zip")
    assert list(tmp_path.iterdir()) == []


def test_the_card_states_the_protection_the_verdict_and_the_jpeg_rule(protected_store, tmp_path):
    card = (tmp_path / "unverified").joinpath("README.md")
    release_store(protected_store, card.parent, "imagefolder")
    text = card.read_text()
    assert "| method | lsp |" in text and "8/255" in text and "| seed | 1 |" in text
    assert "Not verified: run `mtlue verify`" in text
    assert "Never re-encode to JPEG" in text and "Keep PNG" in text and "Do not resize" in text
    assert "0.86" in text  # no defense rows of its own: the README's measured digits number

    verification = {"verdict": "FAIL", "reason": "plain/ew keeps 0.26", "rules": {"max_learnability": 0.2},
                    "profiles": {"plain": "small_cnn, Adam, no augmentation"},
                    "groups": [{"profile": "plain", "weighting": "ew", "defense": "none", "seeds": [0, 1],
                                "worst_learnability": 0.264, "best_learnability": 0.258, "holds": False,
                                "in_verdict": True},
                               {"profile": "plain", "weighting": "ew", "defense": "jpeg10", "seeds": [0],
                                "worst_learnability": 0.859, "best_learnability": 0.859, "holds": False,
                                "in_verdict": False}],
                    "not_run": ["defense cutout: not run"]}
    verified = tmp_path / "verified_store"
    shutil.copytree(protected_store, verified)
    update_manifest(str(verified), "verification", verification)
    release = release_store(verified, tmp_path / "verified", "parquet")
    text = (tmp_path / "verified" / "README.md").read_text()
    assert release["verification"] == verification and "Not verified" not in text
    assert "**Verdict: FAIL.**" in text and "| plain | ew | jpeg10 | 0 | 0.859 | 0.859 | **no** | no |" in text
    assert "`jpeg10` (plain, ew): retained learnability 0.859, **protection broken**" in text
    assert "defense cutout: not run" in text
