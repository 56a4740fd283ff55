"""Per-split HDF5 virtual dataset (STORE/<split>.h5) that maps the split's shards into one array each.

h5py VirtualLayout + VirtualSource with paths relative to the store, so the bundle can be moved;
`h5py.File('S/train.h5')['images']` is then the whole split as (N, H, W, C) uint8.
"""

from __future__ import annotations

import os

import h5py

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
            layout = h5py.VirtualLayout(shape=(total,) + tuple(sample_shape), dtype=dtype)
            offset = 0
            for shard in shards:
                count = int(shard["count"])
                source = h5py.VirtualSource(shard["file"], name, shape=(count,) + tuple(sample_shape))
                layout[offset:offset + count] = source
                offset += count
            f.create_virtual_dataset(name, layout)
    fsync_replace(tmp_path, path)
    return path

