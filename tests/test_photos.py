"""The `photos` source: patches of scikit-image's bundled photographs and their four tasks."""

import hashlib
import pickle

import numpy as np
import pytest

from mtlue.data import open_source, source_class
from mtlue.data import photos
from mtlue.errors import SourceError


@pytest.fixture(scope="module")
def small():
    return open_source("photos:n=1000")


def test_photos_has_the_documented_tasks_splits_and_images(small):
    assert [(t.name, t.kind, t.num_classes) for t in small.tasks] == [
        ("photo", "multiclass", 8), ("orientation", "multiclass", 3),
        ("zoomed_out", "binary", 2), ("top_brighter", "binary", 2)]
    assert set(photos.FLIP_SAFE_TASKS) <= {t.name for t in small.tasks}
    assert small.size("train") == 1000 and small.size("test") == 200
    batch = small.make_batch("test", np.arange(5))
    assert batch.images.shape == (5, 32, 32, 3) and batch.images.dtype == np.uint8
    assert batch.index.tolist() == [1000, 1001, 1002, 1003, 1004]
    default = source_class("photos").from_spec(None)
    assert (default.size("train"), default.size("test"), default.image_shape) == (6000, 1200, (32, 32, 3))


def test_photos_are_the_same_bytes_for_the_same_seed_split_and_position(small):
    again = open_source("photos:n=1000")
    whole = small.make_batch("train", np.arange(300))
    assert whole.images.tobytes() == again.make_batch("train", np.arange(300)).images.tobytes()
    # a sample does not depend on which batch builds it
    sample = again.get("train", 123)
    assert np.array_equal(sample.image, whole.images[123]) and sample.index == 123
    assert sample.labels == {name: int(values[123]) for name, values in whole.labels.items()}
    other_seed = open_source("photos:n=1000,seed=1").make_batch("train", np.arange(300))
    assert not np.array_equal(other_seed.images, whole.images)
    assert np.array_equal(open_source("photos:n=1000", seed=1).make_batch("train", np.arange(300)).images,
                          other_seed.images)


def test_train_and_test_patches_come_from_disjoint_columns_of_each_photograph(small):
    photographs = photos.working_photographs(32)
    seen = {}
    for split in ("train", "test"):
        crops, _ = small.crops(split, np.arange(small.size(split)))
        for k, photo in enumerate(photographs):
            lo, hi = photos.split_columns(photo.shape[1], split)
            chosen = crops["photo"] == k
            assert (crops["x"][chosen] >= lo).all() and (crops["x"][chosen] + crops["side"][chosen] <= hi).all()
        images = small.make_batch(split, np.arange(small.size(split))).images
        seen[split] = {hashlib.sha256(image.tobytes()).hexdigest() for image in images}
    assert photos.split_columns(500, "train") == (0, 375) and photos.split_columns(500, "test") == (375, 500)
    assert not seen["train"] & seen["test"]


def test_each_image_is_its_crop_turned_by_its_orientation_and_labels_read_the_pixels(small):
    photographs = photos.working_photographs(32)
    positions = np.arange(200)
    crops, _ = small.crops("test", positions)
    batch = small.make_batch("test", positions)
    for row in range(len(positions)):
        y, x, side = crops["y"][row], crops["x"][row], crops["side"][row]
        square = photographs[crops["photo"][row]][y:y + side, x:x + side].astype(np.int64)
        if crops["zoomed_out"][row]:
            assert side == 64
            square = (square.reshape(32, 2, 32, 2, 3).sum(axis=(1, 3)) + 2) // 4
        else:
            assert side == 32
        turns = crops["turns"][row]
        assert turns in {0: (0,), 1: (1, 3), 2: (2,)}[int(batch.labels["orientation"][row])]
        assert np.array_equal(batch.images[row], np.rot90(square, turns))
    luma = batch.images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    top_minus_bottom = luma[:, :16].sum(axis=(1, 2)) - luma[:, 16:].sum(axis=(1, 2))
    assert np.array_equal(batch.labels["top_brighter"], (top_minus_bottom > 0).astype(np.int64))
    assert np.array_equal(batch.labels["photo"], crops["photo"])
    assert np.array_equal(batch.labels["zoomed_out"], crops["zoomed_out"])


def test_every_class_appears_in_both_splits_and_binaries_are_balanced(small):
    for split in ("train", "test"):
        for task in small.tasks:
            labels, masks = small.label_array(split, task.name)
            assert masks.all() and len(labels) == small.size(split)
            shares = np.bincount(labels, minlength=task.num_classes) / len(labels)
            assert len(shares) == task.num_classes and shares.min() > 0, (split, task.name, shares)
            if task.kind == "binary":
                assert shares.max() <= 0.6, (split, task.name, shares)
            else:
                assert shares.max() <= 1.6 / task.num_classes, (split, task.name, shares)
    labels, _ = small.label_array("test", "top_brighter")
    assert np.array_equal(labels, small.make_batch("test", np.arange(200)).labels["top_brighter"])


def test_patches_look_like_photographs_not_flat_fills(small):
    images = small.make_batch("train", np.arange(500)).images
    std = photos.luma_std(images)
    assert (std >= photos.MIN_LUMA_STD).mean() > 0.99 and np.median(std) > 15
    channel_means = images.reshape(-1, 3).mean(axis=0)
    assert channel_means.min() > 40 and channel_means.max() < 215
    # neighbouring pixels correlate as in photographs, unlike noise
    flat = images.astype(np.float64).mean(axis=3)
    left, right = flat[:, :, :-1].ravel(), flat[:, :, 1:].ravel()
    assert np.corrcoef(left, right)[0, 1] > 0.8


def test_larger_patches_on_request():
    source = open_source("photos:n=20,size=64")
    batch = source.make_batch("train", np.arange(20))
    assert source.image_shape == (64, 64, 3) and batch.images.shape == (20, 64, 64, 3)
    assert min(photo.shape[0] for photo in photos.working_photographs(64)) == 640


@pytest.mark.parametrize("spec, match", [
    ("photos:m=3", r"photos: bad option 'm=3'"),
    ("photos:n=many", r"photos: option n needs an integer"),
    ("photos:n=0", r"photos: n must be positive"),
    ("photos:size=4", r"photos: size must be at least 8"),
])
def test_bad_options_name_the_option(spec, match):
    with pytest.raises(SourceError, match=match):
        open_source(spec)


def test_a_photograph_missing_from_the_installed_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(photos, "photograph_dir", lambda: str(tmp_path))
    photos.working_photographs.cache_clear()
    try:
        with pytest.raises(SourceError, match=r"astronaut\.png missing"):
            open_source("photos:n=10").make_batch("train", np.arange(2))
    finally:
        photos.working_photographs.cache_clear()


def test_photos_describes_itself_pickles_and_feeds_torch():
    cls = source_class("photos")
    assert cls.spec_help.startswith("photos") and "right 1/4" in cls.summary
    assert len(cls.task_help()) >= 4
    source = pickle.loads(pickle.dumps(open_source("photos:n=20")))
    item = source.dataset("train")[3]
    assert tuple(item["image"].shape) == (3, 32, 32) and int(item["index"]) == 3
    assert set(item["labels"]) == {t.name for t in source.tasks}
