"""Same seed, same bytes: two identical exports, protections and releases, run a second apart into
directories of other names, write byte-identical trees (the HDF5 shards and the virtual-dataset files,
the manifest, the work directory's checkpoints and run record, every release file).

Files of a `mtlue run` / `mtlue verify` tree that hold wall-clock fields, and only those fields, differ:
`<stage>/stage.json` ("started", "finished", "seconds"), a victim's `metrics.json` ("wall_seconds" and each
epoch's "seconds"), and the "verified" time of the verification summary in a verified store's manifest.json.
"""

import os
import time

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
    stores = twice(tmp_path, "protect", SPEC, "--epochs", "1", "--batch-size", "16", "--generator-width", "8",
                   "--samples-per-epoch", "32", "--surrogate-epochs", "1", "--device", "cpu", "--quiet")
    assert_same_trees(*stores)
    assert os.path.isfile(os.path.join(stores[0] + ".work", "generator.pt"))
    assert_same_trees(*(store + ".work" for store in stores))
