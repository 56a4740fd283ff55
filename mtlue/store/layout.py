"""Names, schema strings and file helpers shared by the store writer, reader and verifier.

Layout: STORE/manifest.json · STORE/<split>/shard-00000-of-00008.h5 · STORE/<split>.h5 (VDS).
"""

from __future__ import annotations

import hashlib
import json
import math
import os

SHARD_SCHEMA = "mtlue-shard/1"
STORE_SCHEMA = "mtlue-store/1"
MANIFEST_NAME = "manifest.json"
TMP_SUFFIX = ".tmp"
CHECKSUM_SUFFIX = ".sha256"

# Lossless filters only: lossy compression would destroy the perturbation (it *is* the ISS defense).
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4
CHUNK_TARGET_BYTES = 64 * 1024  # a few samples per chunk: cheap random access, good gzip ratio


def shard_name(shard_id: int, num_shards: int) -> str:
    return f"shard-{shard_id:05d}-of-{num_shards:05d}.h5"


def shard_relpath(split: str, shard_id: int, num_shards: int) -> str:
    """Path of a shard relative to the store directory (as the manifest records it)."""
    return f"{split}/{shard_name(shard_id, num_shards)}"


def vds_name(split: str) -> str:
    return f"{split}.h5"


def shard_ranges(num_samples: int, shard_size: int) -> list:
    """[(start, stop), …] positions of each shard: consecutive runs of `shard_size` samples."""
    num_shards = max(1, math.ceil(num_samples / shard_size))
    return [(i * shard_size, min((i + 1) * shard_size, num_samples)) for i in range(num_shards)]


def chunk_rows(sample_shape: tuple, itemsize: int, count: int) -> int:
    """Samples per chunk so one chunk holds about CHUNK_TARGET_BYTES (at least one sample)."""
    sample_bytes = max(1, int(math.prod(sample_shape)) * itemsize)
    return max(1, min(count, math.ceil(CHUNK_TARGET_BYTES / sample_bytes)))


def sha256_file(path: str, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_replace(tmp_path: str, final_path: str) -> None:
    """Flush `tmp_path` to disk, then atomically rename it over `final_path`."""
    with open(tmp_path, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp_path, final_path)


def write_text_atomic(path: str, text: str) -> None:
    tmp_path = path + TMP_SUFFIX
    with open(tmp_path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp_path, path)


def dumps_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def software_versions() -> dict:
    import platform

    import h5py
    import numpy as np

    from mtlue.version import __version__

    return {
        "mtlue": __version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
