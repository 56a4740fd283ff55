"""Read and update a store's manifest.json (a store is complete iff it exists)."""

from __future__ import annotations

import json
import os

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
    return manifest


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
