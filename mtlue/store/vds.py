"""Per-split HDF5 virtual dataset (STORE/<split>.h5) that maps the split's shards into one array each.

h5py VirtualLayout + VirtualSource with paths relative to the store, so the bundle can be moved;
`h5py.File('S/train.h5')['images']` is then the whole split as (N, H, W, C) uint8.

The file is byte-reproducible: no object records a timestamp (HDF5 tracks times by default, and h5py's
VirtualLayout offers no way to turn that off, hence the low-level dataset creation below).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from mtlue.store.layout import TMP_SUFFIX, fsync_replace, vds_name

VDS_SCHEMA = "mtlue-split/1"


def shard_dataset_specs(shard_path: str) -> dict:
    """{dataset path: (per-sample shape, dtype)} of the datasets a shard holds."""
    specs = {}
    with h5py.File(shard_path, "r") as f:
        for name in ("images", "index"):
            specs[name] = (f[name].shape[1:], f[name].dtype)
        for group in ("labels", "masks"):
            for task in f[group]:
                ds = f[group][task]
                specs[f"{group}/{task}"] = (ds.shape[1:], ds.dtype)
    return specs


def write_split_vds(store_dir: str, split: str, shards: list, tasks_json: str) -> str:
    """Write STORE/<split>.h5 over `shards` ([{"file": relpath, "count": n}, …]); returns its path."""
    specs = shard_dataset_specs(os.path.join(store_dir, shards[0]["file"]))
    total = sum(int(s["count"]) for s in shards)
    path = os.path.join(store_dir, vds_name(split))
    tmp_path = path + TMP_SUFFIX
    # Virtual datasets need the HDF5 1.10 file format or later.
    with h5py.File(tmp_path, "w", libver=("v110", "latest")) as f:
        f.attrs["schema"] = VDS_SCHEMA
        f.attrs["split"] = split
        f.attrs["num_shards"] = len(shards)
        f.attrs["count"] = total
        f.attrs["tasks"] = tasks_json
        f.create_group("labels", track_order=True)
        f.create_group("masks", track_order=True)
        for name, (sample_shape, dtype) in specs.items():
            _create_virtual_dataset(f, name, (total,) + tuple(sample_shape), dtype,
                                    [(shard["file"], int(shard["count"])) for shard in shards])
    fsync_replace(tmp_path, path)
    return path



def _create_virtual_dataset(group, name: str, shape: tuple, dtype, sources: list) -> None:
    """`group[name]`, a virtual dataset of `shape` that stacks along axis 0 the dataset `name` of each
    (relative file path, sample count) in `sources`; created without timestamps."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # same inputs, same bytes
    offset = 0
    for file_name, count in sources:
        source_shape = (count,) + tuple(shape[1:])
        target = h5py.h5s.create_simple(shape)
        target.select_hyperslab((offset,) + (0,) * (len(shape) - 1), (1,) * len(shape), block=source_shape)
        dcpl.set_virtual(target, file_name.encode(), name.encode(), h5py.h5s.create_simple(source_shape))
        offset += count
    h5py.h5d.create(group.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype), logical=1),
                    h5py.h5s.create_simple(shape), dcpl=dcpl)
