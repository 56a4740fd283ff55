"""describe_store: what `mtlue inspect` shows — splits, shard counts, sizes and per-task label balance."""

from __future__ import annotations

import os

import numpy as np

from mtlue.store.manifest import read_manifest, store_file


def describe_store(store_dir: str) -> dict:
    """Manifest facts plus, per split and task, the fraction of labelled samples in each class.

    Class balance counts only samples whose mask is True; regression tasks report mean and std.
    """
    from mtlue.data.shards import ShardSource

    manifest = read_manifest(store_dir)
    source = ShardSource(store_dir)
    splits = {}
    for split, record in manifest["splits"].items():
        size = sum(os.path.getsize(store_file(store_dir, s["file"])) for s in record["shards"])
        splits[split] = {"samples": record["count"], "shards": len(record["shards"]), "bytes": size}
    tasks = []
    for task in source.tasks:
        balance = {}
        for split in source.splits():
            if task.is_dense:  # per-pixel maps: too large to summarise here
                continue
            labels, masks = source.label_array(split, task.name)
            labelled = labels[masks]
            entry = {"labelled": float(masks.mean()) if len(masks) else 0.0}
            if task.is_classification:
                counts = np.bincount(labelled.astype(np.int64), minlength=task.num_classes)
                entry["fractions"] = (counts / max(1, counts.sum())).tolist()
            elif len(labelled):
                entry["mean"], entry["std"] = float(labelled.mean()), float(labelled.std())
            balance[split] = entry
        tasks.append({"name": task.name, "kind": task.kind, "num_classes": task.num_classes, "balance": balance})
    source.close()
    return {"store": store_dir, "image_shape": manifest["image_shape"], "splits": splits, "tasks": tasks,
            "protection": manifest.get("protection"), "source": manifest.get("source"),
            "verification": manifest.get("verification")}
