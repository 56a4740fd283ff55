"""User errors give one line naming the option, key, file or task at fault, a non-zero exit, and
no work done first."""

import os

import pytest
from click.testing import CliRunner
from PIL import Image

import cli

RECIPE = """
name = "tiny"
source = "shapes:n=64,size=16,seed=3"
[protect]
method = "mtlue"
epochs = 1
batch_size = 32
generator_width = 8
[store]
shard_size = 40
[victims]
backbone = "small_cnn"
epochs = 1
weightings = ["ew"]
seeds = [0]
[verify]
max_learnability = 0.2
"""


def one_line_error(result):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("old, new, message", [
    ('weightings = ["ew"]', 'weightings = ["fairgard"]', "unknown weighting 'fairgard'"),
    ("shard_size = 40", 'shard_size = "big"', "shard_size = 'big': expected an integer"),
    ("epochs = 1\nweightings", 'epochs = "ten"\nweightings', "epochs = 'ten': expected an integer"),
    ("max_learnability = 0.2", 'margin = "ten"', "margin was replaced by max_learnability"),
    ("max_learnability = 0.2", 'max_learnability = "low"', "max_learnability = 'low': expected a number"),
    ('backbone = "small_cnn"', 'backbone = "resnet9000"', "unknown backbone 'resnet9000'"),
    ("[verify]", '[[victims.profiles]]\nname = "sgd"\noptimiser = "sgd"\n[verify]', "optimiser"),
    ("generator_width = 8", 'generator_width = 8\nfusion = "patch"', "[protect]: fusion applies to method lsp, ar, texture, not mtlue"),
])
def test_a_bad_recipe_is_refused_before_any_stage_runs(tmp_path, old, new, message):
    assert old in RECIPE
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.replace(old, new, 1))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(cli.main, ["run", str(recipe), "--runs-dir", str(runs), "--quiet"])
    assert message in one_line_error(result) and str(recipe) in result.output
    assert not runs.exists()


@pytest.mark.parametrize("method, extra, message", [
    ("mtlue", ["--fusion", "patch"], "--fusion applies to --method lsp, ar, texture, not mtlue"),
    ("lsp", ["--epochs", "3"], "--epochs applies to --method mtlue, em, not lsp"),
    ("tap", ["--generator-width", "8"], "--generator-width applies to --method mtlue, not tap"),
    ("ar", ["--surrogate-backbone", "resnet18"], "--surrogate-backbone applies to --method mtlue, em, tap, sep, not ar"),
    ("em", ["--norm", "linf"], "--norm applies to --method lsp, ar, texture, not em"),
])
def test_protect_refuses_an_option_its_method_does_not_use(tmp_path, method, extra, message):
    store = tmp_path / "P"
    result = CliRunner().invoke(cli.main, ["protect", "shapes:n=48,size=16", str(store), "--method", method, *extra])
    assert message in one_line_error(result)
    assert not store.exists() and not (tmp_path / "P.work").exists()


def test_a_file_system_error_is_one_line(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(cli.main, ["export", "shapes:n=16,size=8", str(blocker / "store")])
    assert "plain-file" in one_line_error(result)


def test_task_names_that_are_module_attributes_work(tmp_path):
    """`half`, `train`, `to`, `float` are nn.Module attributes; they are ordinary task names here."""
    data = tmp_path / "data"
    data.mkdir()
    names = ["half", "train", "to", "float"]
    lines = ["file," + ",".join(names)]
    for k in range(24):
        Image.new("RGB", (16, 16), (10 * k, 255 - 10 * k, (37 * k) % 256)).save(data / f"{k}.png")
        lines.append(f"{k}.png,{k % 2},{k % 3},{(k // 2) % 2},{k % 4}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    store = str(tmp_path / "P")
    result = runner.invoke(cli.main, ["protect", f"folder:{data}", store, "--method", "mtlue", "--epochs", "1", "--batch-size", "8",
                                      "--generator-width", "8", "--surrogate-epochs", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli.main, ["train", store, "--test", f"folder:{data}", "--backbone", "small_cnn",
                                      "--epochs", "1", "--out", str(tmp_path / "victim"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in names)
    assert os.path.isfile(tmp_path / "victim" / "metrics.json")


PROTECT_FAST = ["--method", "mtlue", "--epochs", "1", "--batch-size", "16", "--generator-width", "8", "--samples-per-epoch", "32",
                "--device", "cpu", "--quiet"]


def test_a_fractional_epsilon_is_respected_in_the_stored_bytes(tmp_path):
    import numpy as np

    from mtlue.data import open_source

    spec = "shapes:n=48,size=16,seed=3"
    store = str(tmp_path / "P")
    result = CliRunner().invoke(cli.main, ["protect", spec, store, "--epsilon", "4.5", *PROTECT_FAST])
    assert result.exit_code == 0, result.output
    stored = next(open_source(store).batches("train", 1000)).images.astype(int)
    clean = next(open_source(spec).batches("train", 1000)).images.astype(int)
    assert np.abs(stored - clean).max() <= 4


def test_a_folder_of_other_files_is_refused_before_training_and_leaves_no_work_dir(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"mine")
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(cli.main, ["protect", "shapes:n=48,size=16", str(out), *extra, *PROTECT_FAST])
        assert "holiday.jpg" in one_line_error(result) or "not empty" in result.output
        assert (out / "holiday.jpg").read_bytes() == b"mine"
        assert not (tmp_path / "photos.work").exists()


def test_train_refuses_a_store_whose_bytes_were_edited(tmp_path):
    import glob

    import h5py

    runner = CliRunner()
    store = str(tmp_path / "S")
    assert runner.invoke(cli.main, ["export", "shapes:n=64,size=16,seed=1", store]).exit_code == 0
    shard = sorted(glob.glob(f"{store}/train/shard-*.h5"))[0]
    with h5py.File(shard, "r+") as f:  # h5py rewrites the chunk with a valid fletcher32
        f["images"][0] = 255 - f["images"][0]
    args = ["train", store, "--backbone", "small_cnn", "--epochs", "1", "--out", str(tmp_path / "v"), "--quiet"]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 1 and "verification failed" in result.output and "shard-00000" in result.output
    assert not (tmp_path / "v").exists()
    assert runner.invoke(cli.main, args + ["--no-check-store"]).exit_code == 0  # the opt-out trusts the bytes


def test_a_manifest_without_a_sha256_is_one_line_for_every_command(tmp_path):
    import json

    runner = CliRunner()
    store = tmp_path / "S"
    assert runner.invoke(cli.main, ["export", "shapes:n=32,size=8,seed=1", str(store)]).exit_code == 0
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["splits"]["train"]["shards"][0]["sha256"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    for args in (["inspect", str(store)], ["inspect", str(store), "--verify"],
                 ["train", str(store), "--epochs", "1", "--out", str(tmp_path / "v"), "--quiet"]):
        result = runner.invoke(cli.main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        assert "sha256" in result.output and len(result.output.strip().splitlines()) == 1, (args, result.output)
