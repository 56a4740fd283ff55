"""Same seed, same bytes: two identical exports, protections and releases, run a second apart into
directories of other names, write byte-identical trees (the HDF5 shards and the virtual-dataset files,
the manifest, the work directory's checkpoints and run record, every release file).

Two identical runs of a recipe (`mtlue run`, whose victims and report are `mtlue verify`'s) differ in
wall-clock fields only (TIMING_FIELDS): `<stage>/stage.json` "started", "finished", "seconds"; a victim's
`metrics.json` "wall_seconds" and each epoch's "seconds"; the "verified" time of the verification summary
in the store's manifest.json.
"""

import os
import time

import pytest
from click.testing import CliRunner

from cli import main

SPEC = "shapes:n=48,size=16"


def tree(root) -> dict:
    """{relative path: bytes} of every file under `root`."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as fh:
                files[os.path.relpath(path, root)] = fh.read()
    return files


def twice(tmp_path, *args) -> tuple:
    """`mtlue ARGS FIRST` and, a second later, `mtlue ARGS SECOND` (the output directory is the last argument)."""
    outputs = []
    for name in ("first", "second"):
        if outputs:
            time.sleep(1.1)  # HDF5 timestamps have one-second resolution
        out = str(tmp_path / name)
        result = CliRunner().invoke(main, [*args, out])
        assert result.exit_code == 0, result.output
        outputs.append(out)
    return tuple(outputs)


def assert_same_trees(first, second):
    a, b = tree(first), tree(second)
    assert sorted(a) == sorted(b)
    assert [path for path in a if a[path] != b[path]] == []


def test_two_identical_exports_write_the_same_bytes(tmp_path):
    first, second = twice(tmp_path, "export", SPEC, "--shard-size", "20", "--quiet")
    assert os.path.isfile(os.path.join(first, "train.h5")) and os.path.isfile(os.path.join(first, "test.h5"))
    assert_same_trees(first, second)


def test_two_identical_protections_and_their_releases_write_the_same_bytes(tmp_path):
    stores = twice(tmp_path, "protect", SPEC, "--method", "lsp", "--shard-size", "20", "--quiet", "--device", "cpu")
    assert_same_trees(*stores)
    assert_same_trees(*(store + ".work" for store in stores))
    for fmt in ("imagefolder", "webdataset", "parquet"):
        releases = []
        for store in stores:
            out = f"{store}-{fmt}"
            assert CliRunner().invoke(main, ["release", store, out, "--format", fmt]).exit_code == 0
            releases.append(out)
        assert_same_trees(*releases)


def test_two_identical_generator_protections_write_the_same_bytes(tmp_path):
    """MTL-UE's generator checkpoints (torch.save) and run record too."""
    stores = twice(tmp_path, "protect", SPEC, "--method", "mtlue", "--epochs", "1", "--batch-size", "16", "--generator-width", "8",
                   "--samples-per-epoch", "32", "--surrogate-epochs", "1", "--device", "cpu", "--quiet")
    assert_same_trees(*stores)
    assert os.path.isfile(os.path.join(stores[0] + ".work", "generator.pt"))
    assert_same_trees(*(store + ".work" for store in stores))


# wall-clock fields, by file name: the only bytes two identical runs may differ in
TIMING_FIELDS = {
    "stage.json": (("started",), ("finished",), ("seconds",)),
    "metrics.json": (("wall_seconds",), ("epochs", "*", "seconds")),
    "manifest.json": (("verification", "verified"),),
}


def without_timing(name: str, data: bytes):
    """The file's content with its TIMING_FIELDS removed (other files as they are)."""
    import json

    if name not in TIMING_FIELDS:
        return data
    record = json.loads(data)
    for path in TIMING_FIELDS[name]:
        holders = [record]
        for key in path[:-1]:
            holders = [h for holder in holders
                       for h in (holder if key == "*" else [holder.get(key)]) if isinstance(h, (dict, list))]
        for holder in holders:
            if isinstance(holder, dict):
                holder.pop(path[-1], None)
    return record


@pytest.mark.slow
def test_two_identical_runs_write_the_same_bytes_but_their_timing_fields(tmp_path):
    """A tiny recipe run twice: every file of the run trees the same, JSON timing fields aside."""
    from mtlue.pipeline import run_pipeline
    from mtlue.recipe import load_recipe

    recipe_path = tmp_path / "tiny.toml"
    recipe_path.write_text(TINY_RUN)
    trees = []
    for name in ("first", "second"):
        if trees:
            time.sleep(1.1)
        run_pipeline(load_recipe(str(recipe_path)), str(tmp_path / name), device="cpu", progress=False,
                     log=lambda _: None)
        trees.append(tree(tmp_path / name))
    first, second = trees
    assert sorted(first) == sorted(second)
    differ = [path for path in first if first[path] != second[path]]
    assert all(os.path.basename(path) in TIMING_FIELDS for path in differ), differ
    assert [path for path in differ if without_timing(os.path.basename(path), first[path])
            != without_timing(os.path.basename(path), second[path])] == []


TINY_RUN = """
name = "tiny"
source = "shapes:n=64,size=16,seed=3"
seed = 0
[surrogate]
backbone = "small_cnn"
epochs = 1
batch_size = 32
[protect]
method = "mtlue"
base = "em"
epochs = 1
batch_size = 32
generator_width = 8
[store]
shard_size = 40
[victims]
backbone = "small_cnn"
epochs = 1
batch_size = 32
weightings = ["ew"]
seeds = [0]
defenses = ["none", "bdr2"]
[verify]
max_learnability = 0.2
"""
