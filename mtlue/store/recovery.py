"""Undo what a killed `--overwrite` left beside a store: the rules are in mtlue.store.writer's docstring."""

from __future__ import annotations

import os
import re
import shutil

from mtlue.errors import StoreError
from mtlue.store.entries import store_entries
from mtlue.store.layout import MANIFEST_NAME

try:
    import fcntl
except ImportError:  # not POSIX: no lock, so a concurrent overwrite is not detected
    fcntl = None


def recover_interrupted_overwrite(store_dir) -> list:
    """Undo what a killed overwrite of `store_dir` left beside it; returns
    what was done, one line each (the rules: mtlue.store.writer's docstring). StoreError while another
    process is replacing the store."""
    store = os.path.abspath(os.fspath(store_dir))
    parent, name = os.path.split(store)
    try:
        names = os.listdir(parent)
    except OSError:
        return []  # no parent yet: nothing was ever staged there
    pattern = re.compile(rf"^{re.escape(name)}\.(partial|replaced)-[0-9a-f]{{8}}$")
    found = {"partial": [], "replaced": []}
    for entry in sorted(names):
        match = pattern.match(entry)
        path = os.path.join(parent, entry)
        if match and os.path.isdir(path) and not os.path.islink(path):
            found[match.group(1)].append(path)
    if not (found["partial"] or found["replaced"]):
        return []
    busy = [p for p in found["partial"] if _is_locked(p)]
    if busy:
        raise StoreError(f"{store_dir}: another process is replacing this store right now "
                         f"({os.path.basename(busy[0])} is in use); wait for it to finish")
    done = []
    if not os.path.lexists(store) and found["replaced"]:
        if len(found["replaced"]) > 1:
            raise StoreError(f"{store_dir}: is missing, and several interrupted overwrites left old stores beside it "
                             f"({', '.join(os.path.basename(p) for p in found['replaced'])}); rename the one to keep "
                             f"to {name}")
        os.rename(found["replaced"][0], store)
        done.append(f"restored the old store from {os.path.basename(found['replaced'].pop())}")
    stale = list(found["partial"])
    if os.path.isfile(os.path.join(store, MANIFEST_NAME)) and not os.path.islink(store):
        stale += found["replaced"]  # the new store is in place: the kill came while the old one was deleted
    for path in stale:
        try:
            store_entries(path)  # anything but store files (or a link) inside: not ours to delete
        except (StoreError, OSError):
            continue
        shutil.rmtree(path)
        done.append(f"removed {os.path.basename(path)}, left by an interrupted overwrite")
    return done


def lock_directory(path: str) -> int | None:
    """An open descriptor of `path` holding an exclusive flock (None where there is no fcntl)."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _is_locked(path: str) -> bool:
    """A live writer holds the flock of this staging directory (a killed one released it)."""
    try:
        fd = lock_directory(path)
    except BlockingIOError:
        return True
    except OSError:
        return False
    if fd is not None:
        os.close(fd)
    return False
