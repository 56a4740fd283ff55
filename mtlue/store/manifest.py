"""Read and update a store's manifest.json (a store is complete iff it exists).

Every file name a manifest holds is a relative path that must resolve inside the store (links
included); `store_file` is the one place such a name becomes a path, and read_manifest checks them all.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import PurePosixPath, PureWindowsPath

from mtlue.errors import StoreError
from mtlue.store.layout import MANIFEST_NAME, STORE_SCHEMA, dumps_json, write_text_atomic


def manifest_path(store_dir: str) -> str:
    return os.path.join(store_dir, MANIFEST_NAME)


def read_manifest(store_dir: str) -> dict:
    """The parsed manifest of a complete store; StoreError names the store when it is absent or malformed."""
    path = manifest_path(store_dir)
    if not os.path.isdir(store_dir):
        raise StoreError(f"{store_dir}: no such store directory")
    if not os.path.isfile(path):
        raise StoreError(
            f"{store_dir}: no {MANIFEST_NAME}, so this is not a complete mtlue store "
            "(an export may have been interrupted: run it again with --resume)"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != STORE_SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise StoreError(f"{path}: schema {found!r}, expected {STORE_SCHEMA!r}")
    for key in ("tasks", "image_shape", "splits"):
        if key not in manifest:
            raise StoreError(f"{path}: missing key {key!r}")
    _check_entries(store_dir, manifest)
    return manifest


def store_file(store_dir: str, name, entry: str = "a file entry") -> str:
    """The path of manifest entry `name` inside `store_dir`; StoreError naming the manifest and the entry
    for anything that is not a relative path to a place inside the store (`..`, absolute, or via a link)."""
    where = f"{manifest_path(store_dir)}: {entry}"
    if not isinstance(name, str) or not name:
        raise StoreError(f"{where}: file name {name!r} is not a relative path inside the store; refusing it")
    parts = name.split("/")
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
            or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts)):
        raise StoreError(f"{where}: file {name!r} points outside the store; refusing it "
                         "(manifest file names are relative paths inside the store)")
    path = os.path.join(store_dir, *parts)
    root = os.path.realpath(store_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise StoreError(f"{where}: file {name!r} leads outside the store through a symbolic link; refusing it")
    return path


def _check_entries(store_dir: str, manifest: dict) -> None:
    """Every split record names its shards and VDS file by paths inside the store."""
    path = manifest_path(store_dir)
    if not isinstance(manifest["splits"], dict):
        raise StoreError(f"{path}: 'splits' must map split names to records")
    for split, record in manifest["splits"].items():
        if not isinstance(record, dict) or not isinstance(record.get("shards"), list) or "vds" not in record:
            raise StoreError(f"{path}: split {split!r} needs a 'shards' list and a 'vds' file name")
        store_file(store_dir, record["vds"], f"split {split!r} vds")
        for number, shard in enumerate(record["shards"]):
            entry = f"split {split!r} shard {number}"
            if not isinstance(shard, dict):
                raise StoreError(f"{path}: {entry} is not a record")
            for key in ("file", "sha256", "count"):
                if key not in shard:
                    raise StoreError(f"{path}: {entry} has no {key!r}")
            store_file(store_dir, shard["file"], entry)


SPEC_WITH_PATH = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):(.+)$")  # folder:/home/me/data, a source spec


def without_local_paths(value):
    """`value` (JSON) with each absolute path, alone or as a source spec's argument, cut to its last part.

    A release names no place on the owner's machine (work dir, checkpoints, source folders); what
    identifies those in a manifest is their sha256 or content digest, not where they lay."""
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str):
        spec = SPEC_WITH_PATH.match(value)
        if spec and _is_absolute(spec.group(2)) and not _is_absolute(value):
            return f"{spec.group(1)}:{_last_part(spec.group(2))}"
        if _is_absolute(value):
            return _last_part(value)
    return value


def _is_absolute(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()


def _last_part(text: str) -> str:
    return PureWindowsPath(text).name if PureWindowsPath(text).is_absolute() else PurePosixPath(text).name


def write_manifest(store_dir: str, manifest: dict) -> None:
    """Write manifest.json atomically (tmp file, fsync, rename)."""
    write_text_atomic(manifest_path(store_dir), dumps_json(manifest))


def update_manifest(store_dir: str, key: str, value) -> dict:
    """Set one top-level key of a complete store's manifest, atomically; returns the new manifest."""
    if key in ("schema", "tasks", "image_shape", "splits"):
        raise StoreError(f"{manifest_path(store_dir)}: key {key!r} describes the shards and cannot be updated")
    manifest = read_manifest(store_dir)
    manifest[key] = value
    write_manifest(store_dir, manifest)
    return manifest
