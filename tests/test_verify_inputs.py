"""`verify` refuses a test split that is not unseen held-out data of the source the release came from."""

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from mtlue.data import open_source
from mtlue.data.base import Sample, Source, TaskSpec
from mtlue.errors import ConfigError
from mtlue.store.export import export_source
from mtlue.verify import check_victim_inputs


class Numbered(Source):
    """20 train / 6 test 8×8 images; `test_start` is the first test index (0: test reuses train ids)."""

    name = "numbered"
    tasks = (TaskSpec("odd", "binary", 2),)
    image_shape = (8, 8, 3)

    def __init__(self, test_start=1000, shift=0):
        self.test_start, self.shift = test_start, shift

    def size(self, split):
        return {"train": 20, "test": 6}[split]

    def get(self, split, position):
        index = position if split == "train" else self.test_start + position
        image = np.full(self.image_shape, (index * 7 + self.shift) % 256, np.uint8)
        return Sample(index, image, {"odd": index % 2}, {"odd": True})


def store_of(tmp_path, source, name="store"):
    export_source(source, str(tmp_path / name), shard_size=8, progress=False)
    return open_source(str(tmp_path / name))


def test_overlapping_train_and_test_indices_are_refused_with_the_count(tmp_path):
    leaky = Numbered(test_start=16)  # test ids 16..21: four of them are train ids
    with pytest.raises(ConfigError, match=r"4 of its 6 test samples .* also in the protected train split"):
        check_victim_inputs(store_of(tmp_path, leaky), leaky)
    check_victim_inputs(store_of(tmp_path, Numbered(), "ok"), Numbered())  # disjoint: accepted


def test_a_test_split_from_other_data_is_refused(tmp_path):
    store = store_of(tmp_path, Numbered())
    with pytest.raises(ConfigError, match="not the source the store was made from"):
        check_victim_inputs(store, Numbered(test_start=2000))  # other test samples


def test_a_copy_of_the_source_folder_is_still_the_same_source(tmp_path):
    import shutil

    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rows = ["file,smiling,split"]
    for k in range(12):
        Image.new("RGB", (8, 8), (20 * k, 100, 200 - 10 * k)).save(data / f"{k}.png")
        rows.append(f"{k}.png,{k % 2},{'test' if k % 4 == 0 else 'train'}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    store = str(tmp_path / "store")
    export_source(open_source(f"folder:{data}"), store, shard_size=8, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)  # new modification times, same files
    check_victim_inputs(open_source(store), open_source(f"folder:{copy}"))


def test_cli_verify_refuses_before_training_anything(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    assert runner.invoke(cli.main, ["export", "shapes:n=64,size=16,seed=1", store]).exit_code == 0
    result = runner.invoke(cli.main, ["verify", store, "--clean", "shapes:n=64,size=16,seed=2", "--epochs", "1",
                                      "--device", "cpu", "--out", str(tmp_path / "report"), "--quiet"])
    assert result.exit_code == 1 and "not the source the store was made from" in result.output
    assert not (tmp_path / "report" / "victims").exists()


@pytest.mark.slow
def test_victims_trained_in_worker_processes_match_one_process(tmp_path, monkeypatch):
    from mtlue.profiles import build_profiles
    from mtlue.train import TrainConfig
    from mtlue.verify import VerifyConfig, train_victim_grid

    spec = "shapes:n=64,size=16,seed=1"
    export_source(open_source(spec), str(tmp_path / "store"), shard_size=32, progress=False)
    protected, clean = open_source(str(tmp_path / "store")), open_source(spec)
    base = TrainConfig(backbone="small_cnn", epochs=1, batch_size=32)
    config = VerifyConfig(profiles=build_profiles([{"name": "plain"}], base, ("ew", "rlw"), "test"), seeds=(0,))
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # one thread per worker, as in this (one-thread) process
    serial = train_victim_grid(protected, clean, config, str(tmp_path / "serial"), "cpu", False, jobs=1)
    parallel = train_victim_grid(protected, clean, config, str(tmp_path / "parallel"), "cpu", False, jobs=2)
    assert [r.to_json() for r in serial] == [r.to_json() for r in parallel]
