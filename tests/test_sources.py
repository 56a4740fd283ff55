"""Dataset sources: digits, shapes and the official on-disk layouts, on tiny fixtures built here."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from mtlue.data import SOURCES, open_source, source_class
from mtlue.errors import SourceError

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def save_image(path, size=(20, 16), mode="RGB", value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 255 - value)).save(path)


# ---------------------------------------------------------------- digits

def test_digits_has_the_documented_splits_tasks_and_images():
    source = open_source("digits")
    assert [t.name for t in source.tasks] == ["left", "right", "sum_even", "left_gt_right"]
    assert [(t.kind, t.num_classes) for t in source.tasks] == [("multiclass", 10), ("multiclass", 10),
                                                               ("binary", 2), ("binary", 2)]
    assert source.size("train") == 6000 and source.size("test") == 1000
    sample = source.get("test", 7)
    assert sample.image.shape == (32, 32, 1) and sample.image.dtype == np.uint8
    assert sample.image.max() == 255  # 0..16 scaled to the full 0..255 range
    batch = next(source.batches("train", 500))
    left, right = batch.labels["left"], batch.labels["right"]
    assert np.array_equal(batch.labels["sum_even"], (left + right) % 2 == 0)
    assert np.array_equal(batch.labels["left_gt_right"], left > right)
    assert set(np.unique(left)) == set(range(10))
    all_index = np.concatenate([b.index for s in ("train", "test") for b in source.batches(s, 4096)])
    assert len(np.unique(all_index)) == 7000


def test_digits_composite_holds_the_upscaled_source_digits_on_each_side():
    from mtlue.data.digits import load_sklearn_digits

    digit_images, digit_labels = load_sklearn_digits()
    source = open_source("digits")
    layout = source.layouts["train"]
    for position in range(20):
        image = source.get("train", position).image[..., 0]
        for side in ("left", "right"):
            x, y, digit = layout[f"{side}_x"][position], layout[f"{side}_y"][position], layout[side][position]
            assert np.all(image[y:y + 16, x:x + 16] >= digit_images[digit])  # max-blended, never dimmed
            assert digit_labels[digit] == source.get("train", position).labels[side]
        assert layout["left_x"][position] + 16 <= 18 and layout["right_x"][position] >= 14  # little overlap


def test_digits_is_deterministic_and_test_digits_are_held_out():
    first, again = open_source("digits"), open_source("digits")
    other = open_source("digits:seed=3")
    assert np.array_equal(first.get("train", 123).image, again.get("train", 123).image)
    assert not np.array_equal(first.get("train", 123).image, other.get("train", 123).image)
    train_digits = set(first.layouts["train"]["left"]) | set(first.layouts["train"]["right"])
    test_digits = set(first.layouts["test"]["left"]) | set(first.layouts["test"]["right"])
    assert not train_digits & test_digits
    assert not set(first.digit_pools["train"]) & set(first.digit_pools["test"])


def test_digits_options_and_seed_argument():
    source = open_source("digits:n_train=50,n_test=20")
    assert (source.size("train"), source.size("test")) == (50, 20)
    assert open_source("digits", seed=5).seed == 5
    assert open_source("digits:seed=2", seed=5).seed == 2  # the spec's own seed wins
    with pytest.raises(SourceError, match="n_tran"):
        open_source("digits:n_tran=5")


# ---------------------------------------------------------------- shapes

def foreground_stats(image):
    """Foreground = saturated pixels (the background is gray): area, centroid, bbox fill, mean colour, spread."""
    pixels = image.astype(np.int32)
    fg = (pixels.max(axis=2) - pixels.min(axis=2)) > 30
    ys, xs = np.nonzero(fg)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    brightness = pixels[fg].max(axis=1)
    return fg.sum(), ys.mean(), xs.mean(), fg.sum() / box, pixels[fg].mean(axis=0), brightness.std() / brightness.mean()


def test_shapes_labels_describe_the_drawn_image():
    source = open_source("shapes:n=300,size=64")
    assert [t.name for t in source.tasks] == ["shape", "colour", "large", "quadrant", "striped"]
    kinds = {t.kind for t in source.tasks}
    assert kinds == {"binary", "multiclass"}
    batch = next(source.batches("train", 300))
    areas = {0: [], 1: []}
    for image, *labels in zip(batch.images, *(batch.labels[t.name] for t in source.tasks)):
        shape, colour, large, quadrant, striped = (int(v) for v in labels)
        area, cy, cx, fill, mean_rgb, spread = foreground_stats(image)
        areas[large].append(area)
        assert (cy >= 32) == (quadrant >= 2) and (cx >= 32) == (quadrant % 2 == 1)
        red, green, blue = mean_rgb
        expected_top = {0: {0}, 1: {1}, 2: {2}, 3: {0, 1}}[colour]
        assert int(np.argmax(mean_rgb)) in expected_top and (colour != 3 or blue < min(red, green))
        if not striped:
            assert {0: 0.7 < fill < 0.86, 1: fill > 0.9, 2: 0.4 < fill < 0.65}[shape]
        assert (spread > 0.15) == bool(striped)
    assert max(areas[0]) < min(areas[1])


def test_shapes_is_deterministic_per_index_and_costs_nothing_to_construct():
    tracemalloc.start()
    huge = open_source("shapes:n=1000000,size=48")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000
    assert huge.size("train") == 1_000_000 and huge.size("test") == 200_000
    last = huge.get("train", 999_999)
    assert last.index == 999_999 and last.image.shape == (48, 48, 3)
    again = open_source("shapes:n=1000000,size=48").get("train", 999_999)
    assert np.array_equal(last.image, again.image) and last.labels == again.labels
    batch = next(huge.batches("train", 8, start=999_992))
    assert np.array_equal(batch.images[-1], last.image)
    test_first = huge.get("test", 0)
    assert test_first.index == 1_000_000
    assert not np.array_equal(test_first.image, huge.get("train", 0).image)  # separate seed stream
    small = open_source("shapes:n=10")
    assert small.size("test") == 200 and small.image_shape == (32, 32, 3)
    assert not np.array_equal(open_source("shapes:seed=1").get("train", 0).image, small.get("train", 0).image)


def test_shapes_label_array_matches_batches_and_rejects_bad_options():
    source = open_source("shapes:n=100,size=16")
    labels, masks = source.label_array("test", "colour")
    assert np.array_equal(labels, np.concatenate([b.labels["colour"] for b in source.batches("test", 64)]))
    assert masks.all()
    with pytest.raises(SourceError, match="size"):
        open_source("shapes:size=abc")
    with pytest.raises(SourceError, match="colour"):
        open_source("shapes:colour=3")


# ---------------------------------------------------------------- folder

def make_folder(root, split_column=True, tasks_json=None, rows=None):
    rows = rows or [
        ("a.png", "train", "1", "2", "0.5"),
        ("sub/b.png", "train", "0", "0", ""),
        ("c.png", "test", "1", "", "1.25"),
        ("d.png", "train", "0", "1", "-3"),
        ("e.png", "test", "", "2", "2"),
    ]
    for k, row in enumerate(rows):
        save_image(str(root / row[0]), size=(20, 16) if k == 0 else (33, 27), value=40 * k)
    header = ["file", "split", "smiling", "pose", "age"]
    if not split_column:
        header.remove("split")
        rows = [row[:1] + row[2:] for row in rows]
    (root / "labels.csv").write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    if tasks_json is not None:
        (root / "tasks.json").write_text(json.dumps(tasks_json))
    return root


def test_folder_infers_kinds_splits_and_missing_labels(tmp_path):
    source = open_source(f"folder:{make_folder(tmp_path)}")
    assert [(t.name, t.kind, t.num_classes) for t in source.tasks] == [
        ("smiling", "binary", 2), ("pose", "multiclass", 3), ("age", "regression", 1)]
    assert source.size("train") == 3 and source.size("test") == 2
    first = source.get("test", 0)
    assert first.index == 2 and first.labels["smiling"] == 1 and first.labels["age"] == 1.25
    assert first.mask == {"smiling": True, "pose": False, "age": True}
    assert source.image_shape == (16, 20, 3) and first.image.shape == (16, 20, 3)  # first image's size
    labels, masks = source.label_array("train", "age")
    assert np.allclose(labels, [0.5, 0.0, -3.0]) and masks.tolist() == [True, False, True]
    item = pickle.loads(pickle.dumps(source)).dataset("train")[1]
    assert item["image"].shape == (3, 16, 20) and int(item["index"]) == 1 and not bool(item["masks"]["age"])


def test_folder_split_by_seed_grayscale_and_declared_tasks(tmp_path):
    root = make_folder(tmp_path, split_column=False,
                       tasks_json={"pose": {"kind": "multiclass", "num_classes": 4}, "smiling": {"kind": "binary"}})
    save_image(str(root / "a.png"), mode="L", size=(12, 10))
    source = open_source(f"folder:{root}")
    assert [(t.name, t.num_classes) for t in source.tasks] == [("pose", 4), ("smiling", 2)]
    assert (source.size("train"), source.size("test")) == (4, 1)
    assert source.get("train", 0).image.shape == (10, 12, 3)  # the other images are in colour: RGB
    again = open_source(f"folder:{root}")
    assert np.array_equal(source.split_rows["test"], again.split_rows["test"])
    splits = {tuple(open_source(f"folder:{root}", seed=s).split_rows["test"]) for s in range(6)}
    assert len(splits) > 1


def test_folder_label_outside_declared_classes_names_file_row_and_task(tmp_path):
    root = make_folder(tmp_path, tasks_json=[{"name": "pose", "kind": "multiclass", "num_classes": 2}])
    with pytest.raises(SourceError, match=r"labels\.csv: line 2 \(a\.png\), task 'pose'"):
        open_source(f"folder:{root}")


def test_folder_missing_column_and_missing_files(tmp_path):
    root = make_folder(tmp_path, tasks_json={"mood": {"kind": "binary"}})
    with pytest.raises(SourceError, match=r"labels\.csv: missing column 'mood'"):
        open_source(f"folder:{root}")
    (root / "tasks.json").unlink()
    (root / "labels.csv").write_text("name,smiling\na.png,1\n")
    with pytest.raises(SourceError, match=r"labels\.csv: missing column 'file'"):
        open_source(f"folder:{root}")
    (root / "labels.csv").unlink()
    with pytest.raises(SourceError, match=r"labels\.csv"):
        open_source(f"folder:{root}")


def test_folder_corrupt_image_is_named_at_open_or_by_get(tmp_path):
    root = make_folder(tmp_path)
    whole = (root / "c.png").read_bytes()
    (root / "c.png").write_bytes(b"not an image at all")
    with pytest.raises(SourceError, match=r"c\.png: unreadable image"):  # headers are read when the folder opens
        open_source(f"folder:{root}")
    (root / "c.png").write_bytes(whole[: len(whole) // 2])  # a truncated PNG: its header still reads
    source = open_source(f"folder:{root}")
    with pytest.raises(SourceError, match=r"c\.png: unreadable image"):
        source.get("test", 0)


def write_table(root, text, images=("a.png", "b.png", "c.png", "d.png")):
    for k, name in enumerate(images):
        save_image(str(root / name), size=(8, 8), value=30 * k + 10)
    (root / "labels.csv").write_text(text, encoding="utf-8")
    return root


def test_a_grayscale_first_image_does_not_strip_the_colour_of_the_others(tmp_path):
    root = write_table(tmp_path, "file,smiling\na.png,1\nb.png,0\nc.png,1\nd.png,0\n")
    save_image(str(root / "a.png"), mode="L", size=(8, 8), value=77)
    source = open_source(f"folder:{root}")
    assert source.image_shape == (8, 8, 3)
    colours = {tuple(source.get(split, k).image[0, 0]) for split in ("train", "test") for k in range(source.size(split))}
    assert (77, 77, 77) in colours and any(len(set(c)) == 3 for c in colours)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        save_image(str(root / name), mode="L", size=(8, 8))
    assert open_source(f"folder:{root}").image_shape == (8, 8, 1)  # all grayscale: one channel


@pytest.mark.parametrize("cells, message", [
    (("1", "0", "-1", "1"), r"line 4, column 'smiling': -1 is not a class label"),
    (("1", "2", "1.5", "0"), r"line 4, column 'smiling': '1\.5' is not a class label, yet 3 of the column's 4"),
])
def test_a_class_column_with_a_stray_value_is_an_error_not_a_regression(tmp_path, cells, message):
    rows = "".join(f"{name},{cell}\n" for name, cell in zip(("a.png", "b.png", "c.png", "d.png"), cells))
    root = write_table(tmp_path, "file,smiling\n" + rows)
    with pytest.raises(SourceError, match=message):
        open_source(f"folder:{root}")
    (root / "tasks.json").write_text(json.dumps({"smiling": {"kind": "regression"}}))
    assert open_source(f"folder:{root}").tasks[0].kind == "regression"  # declared: accepted as it says


def test_a_duplicated_row_is_refused_naming_both_lines(tmp_path):
    root = write_table(tmp_path, "file,smiling\na.png,1\nb.png,0\n\nc.png,1\nb.png,0\n")
    with pytest.raises(SourceError, match=r"line 6: 'b\.png' is listed again \(first on line 3\)"):
        open_source(f"folder:{root}")


def test_a_byte_order_mark_is_ignored_and_lines_are_file_lines(tmp_path):
    root = write_table(tmp_path, "\ufefffile,smiling\na.png,1\n\nb.png,7x\n")
    with pytest.raises(SourceError, match=r"line 4, column 'smiling': '7x' is not a number"):
        open_source(f"folder:{root}")
    (root / "labels.csv").write_text("\ufefffile,smiling\na.png,1\nb.png,0\nc.png,1\nd.png,0\n", encoding="utf-8")
    assert open_source(f"folder:{root}").size("train") == 3


# ---------------------------------------------------------------- celeba

def make_celeba(root, partitions=(0, 0, 0, 1, 2, 2), bad_value=None):
    files = [f"{k + 1:06d}.jpg" for k in range(len(partitions))]
    image_root = root / "img_align_celeba"
    image_root.mkdir(parents=True)
    for k, name in enumerate(files):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[39:179, 19:159] = 200 + k  # the centre 140×140 crop is bright, the border black
        Image.fromarray(pixels).save(image_root / name, quality=95)
    lines = [str(len(files)), " ".join(CELEBA_ATTRIBUTES)]
    for k, name in enumerate(files):
        values = ["1" if (k + a) % 3 == 0 else "-1" for a in range(len(CELEBA_ATTRIBUTES))]
        if bad_value is not None and k == 2:
            values[31] = bad_value
        lines.append(name + "  " + " ".join(f"{v:>2}" for v in values))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(files, partitions)))
    return root


def test_celeba_official_layout(tmp_path):
    source = open_source(f"celeba:{make_celeba(tmp_path)}")
    assert len(source.tasks) == 40 and source.tasks[31].name == "Smiling"
    assert all(t.kind == "binary" for t in source.tasks)
    assert source.size("train") == 3 and source.size("test") == 2  # partition 1 (val) unused
    sample = source.get("test", 1)
    assert sample.index == 5 and sample.image.shape == (70, 70, 3)
    assert sample.image.min() > 150  # only the bright centre crop remains
    assert sample.labels["5_o_Clock_Shadow"] == 0 and sample.labels["Arched_Eyebrows"] == 1  # (5+a) % 3
    labels, _ = source.label_array("train", "Smiling")
    assert labels.tolist() == [1 if (k + 31) % 3 == 0 else 0 for k in range(3)]


@pytest.mark.parametrize("bad_value", ["0", "yes"])
def test_celeba_value_outside_plus_minus_one_names_file_row_and_task(tmp_path, bad_value):
    with pytest.raises(SourceError, match=rf"row 2 \(000003\.jpg\), task 'Smiling': value '{bad_value}'"):
        open_source(f"celeba:{make_celeba(tmp_path, bad_value=bad_value)}")


def test_celeba_rows_that_disagree_with_folder_or_partition_name_the_file(tmp_path):
    root = make_celeba(tmp_path)
    (root / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(SourceError, match=r"000004\.jpg is not in .*img_align_celeba"):
        open_source(f"celeba:{root}")
    save_image(str(root / "img_align_celeba" / "000004.jpg"), size=(178, 218))
    partition = root / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("000002.jpg", "000099.jpg"))
    with pytest.raises(SourceError, match=r"000002\.jpg has no entry"):
        open_source(f"celeba:{root}")
    partition.unlink()
    with pytest.raises(SourceError, match=r"list_eval_partition\.txt"):
        open_source(f"celeba:{root}")


# ---------------------------------------------------------------- utkface

UTK_NAMES = ["1_0_2_20161219140623097.jpg.chip.jpg", "5_1_0_20170109192724578.jpg.chip.jpg",
             "19_0_1_20170116163246123.jpg.chip.jpg", "26_1_3_20170117175400481.jpg.chip.jpg",
             "45_0_4_20170117175400482.jpg.chip.jpg", "69_1_2_20170117175400483.jpg.chip.jpg",
             "70_0_0_20170117175400484.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
             "30_0_3_20170117175400485.jpg.chip.jpg", "2_1_1_20170117175400486.jpg.chip.jpg"]


def make_utkface(folder, names=UTK_NAMES):
    for name in names:
        save_image(str(folder / name), size=(200, 200))
    return folder


def test_utkface_parses_names_into_age_bins_race_and_gender(tmp_path):
    source = open_source(f"utkface:{make_utkface(tmp_path)}")
    assert [(t.name, t.kind, t.num_classes) for t in source.tasks] == [
        ("age", "multiclass", 9), ("race", "multiclass", 5), ("gender", "binary", 2)]
    assert (source.size("train"), source.size("test")) == (8, 2)
    by_name = {source.files[row]: row for row in range(len(source.files))}
    assert source.files == sorted(UTK_NAMES)
    expected_bins = {"1_": 0, "5_": 1, "19": 2, "26": 3, "45": 5, "69": 7, "70": 8, "39": 4, "30": 4, "2_": 0}
    for name, row in by_name.items():
        assert source.labels["age"][row] == expected_bins[name[:2]]
    missing_race = by_name["39_1_20170116174525125.jpg.chip.jpg"]
    assert not source.masks["race"][missing_race] and source.labels["gender"][missing_race] == 1
    split = "train" if missing_race in source.split_rows["train"] else "test"
    sample = source.get(split, int(np.flatnonzero(source.split_rows[split] == missing_race)[0]))
    assert sample.index == missing_race and sample.image.shape == (140, 140, 3) and sample.mask["race"] is False


def test_utkface_nested_folder_seeded_split_and_bad_labels(tmp_path):
    make_utkface(tmp_path / "UTKFace")
    nested = open_source(f"utkface:{tmp_path}")
    assert nested.size("train") + nested.size("test") == 10
    assert np.array_equal(nested.split_rows["test"], open_source(f"utkface:{tmp_path}").split_rows["test"])
    save_image(str(tmp_path / "other" / "30_0_7_20170117175400485.jpg"), size=(50, 50))
    with pytest.raises(SourceError, match=r"30_0_7_20170117175400485\.jpg: task 'race'"):
        open_source(f"utkface:{tmp_path / 'other'}")
    save_image(str(tmp_path / "weird" / "portrait.jpg"), size=(50, 50))
    with pytest.raises(SourceError, match=r"portrait\.jpg"):
        open_source(f"utkface:{tmp_path / 'weird'}")


# ---------------------------------------------------------------- chestxray14

def make_chestxray(root, findings=("No Finding", "Effusion|Hernia", "Cardiomegaly", "Atelectasis|Mass|Nodule",
                                  "Pleural_Thickening", "No Finding")):
    files = [f"0000000{k}_000.png" for k in range(len(findings))]
    (root / "images").mkdir(parents=True)
    for k, name in enumerate(files):
        # NIH ships a few RGBA PNGs among the grayscale ones
        image = Image.new("RGBA", (300, 300), (90, 90, 90, 255)) if k == 1 else Image.new("L", (300, 300), 90)
        image.save(root / "images" / name)
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    rows += [f"{name},{finding},0,{k}" for k, (name, finding) in enumerate(zip(files, findings))]
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text("\n".join([files[0], files[1], files[3], files[4]]) + "\n")
    (root / "test_list.txt").write_text("\n".join([files[5], files[2]]) + "\n")
    return root


def test_chestxray14_official_layout(tmp_path):
    source = open_source(f"chestxray14:{make_chestxray(tmp_path)}")
    assert len(source.tasks) == 14 and source.tasks[0].name == "Atelectasis" and source.tasks[-1].name == "Hernia"
    assert (source.size("train"), source.size("test")) == (4, 2)
    second = source.get("train", 1)
    assert second.index == 1 and second.image.shape == (256, 256, 1)
    assert {name for name, v in second.labels.items() if v} == {"Effusion", "Hernia"}
    assert source.get("test", 0).index == 2 and source.get("test", 0).labels["Cardiomegaly"] == 1
    labels, masks = source.label_array("train", "Nodule")
    assert labels.tolist() == [0, 0, 1, 0] and masks.all()


def test_chestxray14_bad_inputs_name_the_culprit(tmp_path):
    root = make_chestxray(tmp_path)
    csv_path = root / "Data_Entry_2017.csv"
    good = csv_path.read_text()
    csv_path.write_text(good.replace("Cardiomegaly", "Cardiomegally"))
    with pytest.raises(SourceError, match=r"row 2 \(00000002_000\.png\).*'Cardiomegally'"):
        open_source(f"chestxray14:{root}")
    csv_path.write_text(good.replace("Finding Labels", "Findings"))
    with pytest.raises(SourceError, match=r"Data_Entry_2017\.csv: missing column 'Finding Labels'"):
        open_source(f"chestxray14:{root}")
    csv_path.write_text(good)
    (root / "images" / "00000003_000.png").write_bytes(b"\x89PNG broken")
    source = open_source(f"chestxray14:{root}")
    with pytest.raises(SourceError, match=r"00000003_000\.png: unreadable image"):
        source.get("train", 2)
    (root / "test_list.txt").unlink()
    with pytest.raises(SourceError, match=r"test_list\.txt"):
        open_source(f"chestxray14:{root}")


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("name", ["digits", "shapes", "folder", "celeba", "utkface", "chestxray14"])
def test_every_source_describes_itself_without_data(name):
    cls = source_class(name)
    assert cls.spec_help.startswith(name) and cls.summary
    assert cls.task_help() and all(isinstance(line, str) for line in cls.task_help())


@pytest.mark.parametrize("name", ["folder", "celeba", "utkface", "chestxray14"])
def test_path_sources_need_an_existing_folder(name, tmp_path):
    with pytest.raises(SourceError, match=name):
        open_source(name)
    with pytest.raises(SourceError, match="nowhere"):
        open_source(f"{name}:{tmp_path / 'nowhere'}")


def test_generated_sources_pickle_and_feed_torch():
    for spec in ("digits:n_train=20,n_test=10", "shapes:n=20,size=16"):
        source = pickle.loads(pickle.dumps(open_source(spec)))
        item = source.dataset("train")[3]
        assert item["image"].dtype.is_floating_point is False and int(item["index"]) == 3
        assert set(item["labels"]) == {t.name for t in source.tasks}
    assert "shards" in SOURCES
