"""JSON files a run writes: the one JSON-safe conversion, written through the store's atomic write."""

from __future__ import annotations

import json
import math
import os

import numpy as np


def json_safe(value):
    """A JSON-safe copy: numpy scalars and arrays to Python, tuples to lists, NaN and ±inf to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path, data, indent: int = 2, sort_keys: bool = False) -> None:
    """Write `json_safe(data)` atomically (temporary name, fsync, rename: mtlue.store.layout)."""
    from mtlue.store.layout import write_text_atomic

    text = json.dumps(json_safe(data), indent=indent, sort_keys=sort_keys, allow_nan=False, default=str)
    write_text_atomic(os.fspath(path), text + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
