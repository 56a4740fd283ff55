"""Which files in a directory belong to an mtlue store: what an overwrite may replace and a recovery may delete.

A store directory holds manifest.json, split VDS files (`<split>.h5`, schema mtlue-split/1) and split
folders of shards with their `.sha256` files (and `.tmp` names while they are written). Anything else,
or any symbolic link, makes the directory not ours: it is refused, never deleted.
"""

from __future__ import annotations

import os
import re

import h5py

from mtlue.errors import StoreError
from mtlue.store.vds import VDS_SCHEMA

SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
STORE_ENTRY = re.compile(r"^(manifest\.json|[A-Za-z0-9_][A-Za-z0-9_.-]*\.h5)(\.tmp)?$")
SHARD_ENTRY = re.compile(r"^shard-\d{5}-of-\d{5}\.h5(\.tmp|\.sha256|\.sha256\.tmp)?$")


def store_entries(d: str) -> list:
    """Paths of the store files in the directory; StoreError when it holds anything else, or a link."""
    entries = []
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if os.path.islink(path):
            raise StoreError(f"{d}: refusing to replace it: {name} is a symbolic link "
                             "(mtlue never writes or deletes through a link)")
        if os.path.isdir(path) and SPLIT_NAME.match(name):
            inner = sorted(os.listdir(path))
            for n in inner:
                if os.path.islink(os.path.join(path, n)):
                    raise StoreError(f"{d}: refusing to replace it: {name}/{n} is a symbolic link "
                                     "(mtlue never writes or deletes through a link)")
            foreign = [n for n in inner if not (SHARD_ENTRY.match(n) and os.path.isfile(os.path.join(path, n)))]
            if foreign:
                raise StoreError(f"{d}: refusing to replace it: {name}/{foreign[0]} is not part of an mtlue store")
            entries += [os.path.join(path, n) for n in inner] + [path]
        elif os.path.isfile(path) and STORE_ENTRY.match(name) and (
                not name.endswith(".h5") or is_split_vds(path)):
            entries.append(path)
        else:
            raise StoreError(f"{d}: refusing to replace it: {name} is not part of an mtlue store")
    return entries


def check_output_dir(store_dir, overwrite: bool) -> None:
    """StoreWriter's refusals that do not depend on a resume, made before any expensive work: the
    output is not a directory; with `overwrite`, it holds anything but an mtlue store, or a link."""
    d = os.fspath(store_dir)
    if os.path.exists(d) and not os.path.isdir(d):
        raise StoreError(f"{d}: exists and is not a directory")
    if overwrite and os.path.isdir(d) and os.listdir(d):
        if os.path.islink(d):
            raise StoreError(f"{d}: is a symbolic link; --overwrite replaces only a real store directory "
                             f"(give {os.path.realpath(d)} itself)")
        store_entries(d)


def is_split_vds(path: str) -> bool:
    """A top-level .h5 file is part of a store only if it is a split's VDS file (never a user's data file)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("schema") == VDS_SCHEMA
    except OSError:
        return False
