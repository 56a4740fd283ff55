"""Files from others run no code, a failed --overwrite loses nothing, and a store is only what its manifest says."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from mtlue.data import open_source
from mtlue.data.shards import ShardSource
from mtlue.errors import CheckpointError, IntegrityError, ProtectionError, StoreError
from mtlue.protect import protect_config
from mtlue.protect.base import ProtectionMethod
from mtlue.protect.config import SurrogateConfig
from mtlue.protect.driver import protect_source
from mtlue.store import StoreWriter, export_source, read_manifest, verify_store
from mtlue.store.recovery import recover_interrupted_overwrite
from mtlue.store.vds import write_split_vds

sys.path.insert(0, os.path.dirname(__file__))
from test_store import TinySource, shard_hashes  # noqa: E402

CPU = torch.device("cpu")
SPEC = "shapes:n=64,size=16"


class CodeOnLoad:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"fingerprint": CodeOnLoad(marker), "build": {}, "state": {}}, path)
    return path


def tiny_config(**changes):
    settings = dict(method="mtlue", base="em", epochs=1, batch_size=16, generator_width=8, seed=1,
                    surrogate=SurrogateConfig(backbone="small_cnn"), samples_per_epoch=16)
    return protect_config({**settings, **changes}, explicit=changes)


class FixedDelta(ProtectionMethod):
    """A method returning a constant δ: no training, so a protect run takes a moment."""

    name = "fixed"

    def __init__(self, config, value):
        super().__init__(config)
        self.value = value

    def perturb(self, batch, device):
        return np.full(batch.images.shape, self.value, dtype=np.float32)


def store_snapshot(store) -> dict:
    """Relative path -> bytes of every file in a store directory."""
    files = {}
    for root, _, names in os.walk(store):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, store)] = open(path, "rb").read()
    return files


def siblings(store) -> list:
    parent, name = os.path.split(os.path.abspath(store))
    return sorted(n for n in os.listdir(parent) if n.startswith(name) and n != name and not n.endswith(".work"))


def image_folder(root: Path, count: int = 12, truncate_last: bool = False) -> Path:
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,smile"]
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{k}.png")
        rows.append(f"{k}.png,{k % 2}")
    if truncate_last:
        data = (root / f"{count - 1}.png").read_bytes()
        (root / f"{count - 1}.png").write_bytes(data[: len(data) // 2])
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tiny_store(tmp_path):
    store = str(tmp_path / "store")
    export_source(TinySource(), store, shard_size=10, progress=False)
    return store


# ---- 1. checkpoints hold no code ---------------------------------------------------------------------

def test_every_torch_load_in_mtlue_is_weights_only():
    package = Path(__file__).resolve().parents[1] / "mtlue"
    calls = []
    for path in package.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth:  # to the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            calls.append((path.name, text[match.start():end]))
    assert calls, "expected the safe loader's torch.load call"
    assert all("weights_only=True" in call for _, call in calls), calls


def test_a_crafted_generator_state_in_the_work_dir_runs_no_code(tmp_path):
    live = tmp_path / "live-marker"  # the payload is real: an unsafe load runs it
    torch.load(crafted_checkpoint(tmp_path / "live.pt", live), weights_only=False)
    assert live.is_dir()

    marker = tmp_path / "code-ran"
    work_dir = tmp_path / "w"
    work_dir.mkdir()
    state = crafted_checkpoint(work_dir / "generator-state.pt", marker)
    with pytest.raises(CheckpointError, match="refusing to unpickle") as caught:
        protect_source(open_source(SPEC), tmp_path / "P", tiny_config(), CPU, work_dir=work_dir, progress=False)
    assert str(state) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()
    assert not (tmp_path / "P" / "manifest.json").exists()


def test_a_crafted_generator_file_gives_a_one_line_error_and_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    generator = crafted_checkpoint(tmp_path / "generator.pt", marker)
    result = CliRunner().invoke(main, ["protect", SPEC, str(tmp_path / "P"), "--method", "mtlue", "--generator", str(generator),
                                       "--generator-width", "8", "--quiet", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a reported error, not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(generator) in lines[0] and "refusing to unpickle" in lines[0], result.output
    assert "weights_only=False" not in result.output
    assert not marker.exists()


def test_the_generator_state_mtlue_writes_loads_with_weights_only(tmp_path):
    work_dir = tmp_path / "w"
    protect_source(open_source(SPEC), tmp_path / "P", tiny_config(), CPU, work_dir=work_dir, progress=False)
    state = torch.load(work_dir / "generator-state.pt", weights_only=True)
    assert state["iteration"] == 1 and isinstance(state["scheduler"]["milestones"], dict)


# ---- 2. a failed --overwrite keeps the old store -------------------------------------------------------

def test_a_failed_export_overwrite_keeps_the_old_store(tmp_path):
    good, bad = image_folder(tmp_path / "good"), image_folder(tmp_path / "bad", truncate_last=True)
    store = str(tmp_path / "S")
    runner = CliRunner()
    first = runner.invoke(main, ["export", f"folder:{good}", store, "--quiet"])
    assert first.exit_code == 0, first.output
    before = store_snapshot(store)
    failed = runner.invoke(main, ["export", f"folder:{bad}", store, "--overwrite", "--quiet"])
    assert failed.exit_code == 1 and "11.png" in failed.output, failed.output
    assert store_snapshot(store) == before
    verify_store(store)
    assert siblings(store) == []


def test_a_failed_protect_overwrite_keeps_the_old_store(tmp_path):
    source, store = open_source(SPEC), tmp_path / "P"
    protect_source(source, store, tiny_config(), CPU, progress=False, method=FixedDelta(tiny_config(), 1 / 255))
    before = store_snapshot(store)
    with pytest.raises(ProtectionError, match="nothing was written"):
        protect_source(source, store, tiny_config(), CPU, progress=False, overwrite=True,
                       method=FixedDelta(tiny_config(), float("nan")))
    assert store_snapshot(store) == before
    verify_store(str(store))
    assert siblings(store) == []


def test_an_interrupted_overwrite_keeps_the_old_store(tiny_store):
    before = store_snapshot(tiny_store)

    def interrupted(start, stop):
        yield from TinySource(seed=1).batches("train", 4, start, min(stop, start + 4))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(tiny_store, TinySource.tasks, TinySource.image_shape, overwrite=True) as writer:
            writer.write_split("train", 37, 10, interrupted, progress=False)
    assert store_snapshot(tiny_store) == before and siblings(tiny_store) == []


def test_overwrite_swaps_in_the_new_store_and_leaves_nothing_beside_it(tiny_store):
    old = shard_hashes(tiny_store)
    export_source(TinySource(seed=5), tiny_store, shard_size=10, progress=False, overwrite=True)
    assert shard_hashes(tiny_store) != old
    verify_store(tiny_store)
    assert siblings(tiny_store) == []


def test_resume_refuses_a_complete_store_instead_of_reopening_it(tiny_store):
    before = store_snapshot(tiny_store)
    with pytest.raises(StoreError, match="nothing to resume"):
        export_source(TinySource(), tiny_store, shard_size=10, progress=False, resume=True)
    assert store_snapshot(tiny_store) == before


# ---- 3. never delete through a symlink ----------------------------------------------------------------

def test_overwrite_never_deletes_through_a_symlinked_split(tmp_path, tiny_store):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(os.path.join(tiny_store, "train"), elsewhere)
    os.symlink(elsewhere, os.path.join(tiny_store, "train"))
    kept = store_snapshot(elsewhere)
    result = CliRunner().invoke(main, ["export", "shapes:n=40,size=8", tiny_store, "--overwrite", "--quiet"])
    assert result.exit_code == 1 and "train is a symbolic link" in result.output, result.output
    assert isinstance(result.exception, SystemExit)
    assert store_snapshot(elsewhere) == kept
    assert os.path.islink(os.path.join(tiny_store, "train"))
    with pytest.raises(StoreError, match="through a symbolic link"):
        ShardSource(tiny_store)
    with pytest.raises(IntegrityError, match="symbolic link"):
        verify_store(tiny_store)


def test_overwrite_refuses_a_store_directory_that_is_a_link(tmp_path, tiny_store):
    link = tmp_path / "link"
    os.symlink(tiny_store, link)
    before = store_snapshot(tiny_store)
    with pytest.raises(StoreError, match="symbolic link"):
        export_source(TinySource(seed=5), str(link), shard_size=10, progress=False, overwrite=True)
    assert store_snapshot(tiny_store) == before and os.path.islink(link)


# ---- 4. manifest paths stay inside the store; the VDS maps the manifest's shards ---------------------------

@pytest.mark.parametrize("outside", ["../outside.h5", "ABSOLUTE"])
def test_a_manifest_entry_outside_the_store_is_refused(tmp_path, tiny_store, outside):
    shard = os.path.join(tiny_store, "train", "shard-00000-of-00004.h5")
    target = tmp_path / "outside.h5"
    shutil.copy(shard, target)  # same bytes, so the sha256 in the manifest still matches
    name = str(target) if outside == "ABSOLUTE" else outside
    manifest_file = os.path.join(tiny_store, "manifest.json")
    manifest = json.loads(open(manifest_file).read())
    manifest["splits"]["train"]["shards"][0]["file"] = name
    open(manifest_file, "w").write(json.dumps(manifest))

    with pytest.raises(IntegrityError, match="points outside the store") as caught:
        verify_store(tiny_store)
    assert manifest_file in str(caught.value) and "split 'train' shard 0" in str(caught.value)
    assert name in str(caught.value)
    with pytest.raises(StoreError, match="points outside the store"):
        ShardSource(tiny_store)
    result = CliRunner().invoke(main, ["inspect", tiny_store, "--verify"])
    assert result.exit_code == 1 and "points outside the store" in result.output


def test_verify_refuses_a_vds_whose_sources_are_reordered_or_missing(tiny_store):
    manifest = read_manifest(tiny_store)
    shards = manifest["splits"]["train"]["shards"]
    tasks_json = json.dumps(manifest["tasks"])
    verify_store(tiny_store)

    write_split_vds(tiny_store, "train", [shards[1], shards[0]] + shards[2:], tasks_json)
    with h5py.File(os.path.join(tiny_store, "train.h5"), "r") as f:
        assert f["images"].shape == (37, 8, 8, 3)  # the shape check alone passes
    with pytest.raises(IntegrityError, match=r"train\.h5: images source 0 is train/shard-00001"):
        verify_store(tiny_store)

    missing = dict(shards[2], file="train/shard-00009-of-00004.h5")
    write_split_vds(tiny_store, "train", shards[:2] + [missing, shards[3]], tasks_json)
    with pytest.raises(IntegrityError, match=r"train\.h5: images source 2 is train/shard-00009"):
        verify_store(tiny_store)

    write_split_vds(tiny_store, "train", shards, tasks_json)
    verify_store(tiny_store)


# ---- 5. the release names no place on the owner's machine ----------------------------------------------

def test_the_manifest_records_no_local_paths(tmp_path):
    work_dir = tmp_path / "w"
    config = tiny_config(surrogate_path=str(tmp_path / "models" / "clean.pt"))
    protect_source(open_source(SPEC), tmp_path / "P", config, CPU, work_dir=work_dir, progress=False,
                   method=FixedDelta(config, 1 / 255))
    text = (tmp_path / "P" / "manifest.json").read_text()
    assert str(tmp_path) not in text and str(work_dir) not in text
    protection = json.loads(text)["protection"]
    assert "work_dir" not in protection["config"]
    assert protection["config"]["surrogate_path"] == "clean.pt"

    folder = image_folder(tmp_path / "images")
    export_source(open_source(f"folder:{folder}"), str(tmp_path / "S"), progress=False, spec=f"folder:{folder}")
    text = (tmp_path / "S" / "manifest.json").read_text()
    assert str(tmp_path) not in text and json.loads(text)["source"]["spec"] == "folder:images"


# ---- 6. verify names files the manifest does not account for -------------------------------------------

@pytest.mark.parametrize("extra", ["notes.txt", "train/extra.h5", "test/shard-00000-of-00002.h5.tmp",
                                   "more/data.bin"])
def test_verify_names_files_the_manifest_does_not_account_for(tiny_store, extra):
    verify_store(tiny_store)
    path = os.path.join(tiny_store, *extra.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").write(b"x")
    first = extra.split("/")[0] + "/" if extra.startswith("more/") else extra
    with pytest.raises(IntegrityError, match=re.escape(first) + ".*the manifest does not account for it"):
        verify_store(tiny_store)
    result = CliRunner().invoke(main, ["inspect", tiny_store, "--verify"])
    assert result.exit_code == 1 and first in result.output


def test_a_sidecar_checksum_that_disagrees_fails_verify(tiny_store):
    sidecar = os.path.join(tiny_store, "train", "shard-00000-of-00004.h5.sha256")
    open(sidecar, "w").write("0" * 64 + "  shard-00000-of-00004.h5\n")
    with pytest.raises(IntegrityError, match="shard-00000-of-00004.h5.sha256"):
        verify_store(tiny_store)


# ---- a killed --overwrite is undone by the next writer on the store ------------------------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the writer's clean-up."""


def test_a_kill_between_the_two_renames_is_undone_by_the_next_writer(tiny_store, monkeypatch):
    import mtlue.store.writer as writer_module

    before = store_snapshot(tiny_store)
    real_rename, calls = os.rename, []

    def dying_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old store is aside, the complete new one not yet in place
            raise Killed
        real_rename(src, dst)

    monkeypatch.setattr(writer_module.os, "rename", dying_rename)
    # a killed process runs no clean-up; only the kernel drops its lock on the staging directory
    monkeypatch.setattr(StoreWriter, "_fail", lambda self, exc_type: self._release_staging_lock())
    with pytest.raises(Killed):
        export_source(TinySource(seed=5), tiny_store, shard_size=10, progress=False, overwrite=True)
    monkeypatch.undo()
    assert not os.path.exists(tiny_store)
    assert [n.split("-")[0] for n in siblings(tiny_store)] == ["store.partial", "store.replaced"]

    done = recover_interrupted_overwrite(tiny_store)
    assert len(done) == 2 and "restored the old store" in done[0]
    assert store_snapshot(tiny_store) == before and siblings(tiny_store) == []  # as if it never started
    export_source(TinySource(seed=5), tiny_store, shard_size=10, progress=False, overwrite=True)  # the rerun
    verify_store(tiny_store)
    assert store_snapshot(tiny_store) != before and siblings(tiny_store) == []


def test_a_missing_store_is_restored_by_the_next_command_on_it(tmp_path, tiny_store):
    before = store_snapshot(tiny_store)
    os.rename(tiny_store, tiny_store + ".replaced-0123abcd")
    export_source(TinySource(seed=5), tiny_store + ".partial-89abcdef", shard_size=10, progress=False)
    result = CliRunner().invoke(main, ["export", "shapes:n=40,size=8", tiny_store, "--quiet"])
    assert result.exit_code == 1 and "not empty" in result.output, result.output  # the old store is back
    assert store_snapshot(tiny_store) == before and siblings(tiny_store) == []


def test_stale_partial_stores_are_removed_but_never_a_users_files_or_links(tmp_path, tiny_store):
    stale = Path(tiny_store + ".partial-00000001")
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "shard-00000-of-00004.h5.tmp").write_bytes(b"half a shard")
    foreign = Path(tiny_store + ".partial-00000002")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "train").mkdir(parents=True)
    os.symlink(elsewhere, tiny_store + ".partial-00000003")
    half_deleted = Path(tiny_store + ".replaced-00000004")  # killed while the old store was removed
    shutil.copytree(os.path.join(tiny_store, "train"), half_deleted / "train")
    os.remove(next((half_deleted / "train").glob("*.h5")))

    export_source(TinySource(seed=5), tiny_store, shard_size=10, progress=False, overwrite=True)
    assert not stale.exists() and not half_deleted.exists()
    assert (foreign / "notes.txt").read_text() == "mine"
    assert os.path.islink(tiny_store + ".partial-00000003") and (elsewhere / "train").is_dir()
    verify_store(tiny_store)


def test_a_live_overwrite_by_another_writer_is_not_taken_for_a_killed_one(tiny_store):
    with StoreWriter(tiny_store, TinySource.tasks, TinySource.image_shape, overwrite=True) as first:
        staging = first.write_dir
        with pytest.raises(StoreError, match="replacing this store right now"):
            StoreWriter(tiny_store, TinySource.tasks, TinySource.image_shape, overwrite=True)
        assert os.path.isdir(staging)
        first.write_split("train", 37, 10, lambda a, b: TinySource(seed=5).batches("train", 4, a, b), progress=False)
        first.finish()
    verify_store(tiny_store)
    assert siblings(tiny_store) == []


def test_a_killed_protect_overwrite_leaves_the_old_store_to_the_rerun(tmp_path):
    source, store = open_source(SPEC), tmp_path / "P"
    protect_source(source, store, tiny_config(), CPU, progress=False, method=FixedDelta(tiny_config(), 1 / 255))
    before = store_snapshot(store)
    os.rename(store, str(store) + ".replaced-0123abcd")
    with pytest.raises(StoreError, match="already there"):
        protect_source(source, store, tiny_config(), CPU, progress=False, method=FixedDelta(tiny_config(), 2 / 255))
    assert store_snapshot(store) == before and siblings(store) == []
