"""release_store: verify a store, write one release format into a sibling temp dir, rename it to OUT."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile

# what a release is read as is what it is written as: one definition, the reader's
from mtlue.data.release import FORMATS, RELEASE_NAME as RELEASE_JSON, RELEASE_SCHEMA as SCHEMA, SUMS_NAME as CHECKSUMS
from mtlue.errors import ConfigError, StoreError
from mtlue.store.layout import dumps_json, sha256_file

CARD = "README.md"
CROISSANT = "croissant.json"


def release_store(store_dir, out_dir, fmt: str, overwrite: bool = False, progress: bool = False) -> dict:
    """Write the store's splits as `fmt` under `out_dir`; returns the release.json content.

    The store is verified first. Everything is written into `OUT.partial-XXXX` next to OUT and renamed
    at the end, so OUT is either the complete release or untouched. An existing non-empty OUT is
    refused unless `overwrite`, and then only when it is a real directory holding a release.json.
    """
    from mtlue.data.shards import ShardSource
    from mtlue.release.writers import WRITERS, check_releasable
    from mtlue.store import verify_store

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    store_dir, out_dir = os.fspath(store_dir), os.path.normpath(os.fspath(out_dir))
    _check_out(store_dir, out_dir, overwrite)
    verify_store(store_dir)
    store = ShardSource(store_dir)
    check_releasable(store)
    writer = WRITERS[fmt]
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".partial-", dir=parent)
    try:
        splits = {}
        for split in store.splits():
            with _progress(store.size(split), f"release {split}", progress) as tick:
                files = writer(store, split, staging, tick)
            splits[split] = {"count": store.size(split), "files": files}
        release = _release_record(store, fmt, splits)
        _write_metadata(store, staging, release)
        store.close()
        _swap_in(staging, out_dir)
    except BaseException:
        store.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return release


def _check_out(store_dir: str, out_dir: str, overwrite: bool) -> None:
    """The refusals, made before any pixel is read."""
    if os.path.islink(out_dir):
        raise StoreError(f"{out_dir}: is a symbolic link; give a real directory as OUT")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise StoreError(f"{out_dir}: exists and is not a directory")
    store, out = os.path.realpath(store_dir), os.path.realpath(out_dir)
    if out == store or out.startswith(store + os.sep) or store.startswith(out + os.sep):
        raise ConfigError(f"{out_dir}: OUT must lie outside the store {store_dir} and not contain it")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise StoreError(f"{out_dir}: exists and is not empty; pass --overwrite to replace an mtlue release")
        marker = os.path.join(out_dir, RELEASE_JSON)
        if os.path.islink(marker) or not os.path.isfile(marker):
            raise StoreError(f"{out_dir}: holds no {RELEASE_JSON}, so it is not an mtlue release; "
                             f"--overwrite replaces only a release")


def _release_record(store, fmt: str, splits: dict) -> dict:
    from mtlue.release.writers import FORMAT_LIBRARY

    manifest = store.manifest
    with open(os.path.join(store.store_dir, "manifest.json"), "rb") as fh:
        manifest_sha = hashlib.sha256(fh.read()).hexdigest()
    return {"schema": SCHEMA, "format": fmt, "tasks": [t.to_json() for t in store.tasks],
            "image_shape": list(store.image_shape), "splits": splits,
            "protection": manifest.get("protection"), "verification": manifest.get("verification"),
            "budget": manifest.get("budget"),
            "source": manifest.get("source"), "store_manifest_sha256": manifest_sha, "image_encoding": "png",
            "software": release_software(FORMAT_LIBRARY[fmt])}


def release_software(library: str | None) -> dict:
    import PIL

    from mtlue.version import __version__

    versions = {"mtlue": __version__, "pillow": PIL.__version__}
    if library:
        versions[library] = __import__(library).__version__
    return versions


def _write_metadata(store, staging: str, release: dict) -> None:
    """release.json, the dataset card, croissant.json, then SHA256SUMS over every other file."""
    from mtlue.release.card import dataset_card
    from mtlue.release.croissant import croissant_metadata

    _write_text(os.path.join(staging, RELEASE_JSON), dumps_json(release))
    _write_text(os.path.join(staging, CARD), dataset_card(release))
    _write_text(os.path.join(staging, CROISSANT), dumps_json(croissant_metadata(release, staging)))
    lines = [f"{sha256_file(os.path.join(staging, rel))}  {rel}\n" for rel in release_files(staging)
             if rel != CHECKSUMS]
    _write_text(os.path.join(staging, CHECKSUMS), "".join(lines))


def release_files(root: str) -> list:
    """Every file under `root`, as sorted '/'-separated relative paths."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(found)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _swap_in(staging: str, out_dir: str) -> None:
    """Rename the finished release to OUT; a replaced release is moved aside first, then removed."""
    if os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".replaced-", dir=os.path.dirname(staging))
    replaced = os.path.join(old, "release")
    os.rename(out_dir, replaced)
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(replaced, out_dir)  # put the old release back
        os.rmdir(old)
        raise
    shutil.rmtree(old)  # rmtree removes links inside without following them


class _progress:
    """A tqdm bar on stderr when asked for; otherwise a no-op tick."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr)

    def __enter__(self):
        return self.bar.update if self.bar is not None else (lambda n: None)

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.close()
        return False
