"""The HDF5 shard store: writer, manifest, verification and per-split virtual datasets.

STORE/manifest.json · STORE/<split>/shard-00000-of-00008.h5 · STORE/<split>.h5 (VDS over the shards).
"""

from mtlue.store.export import export_source
from mtlue.store.layout import SHARD_SCHEMA, STORE_SCHEMA
from mtlue.store.manifest import read_manifest, update_manifest
from mtlue.store.verify import verify_store
from mtlue.store.writer import StoreWriter

__all__ = ["SHARD_SCHEMA", "STORE_SCHEMA", "StoreWriter", "export_source", "read_manifest", "update_manifest",
           "verify_store"]
