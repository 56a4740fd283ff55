"""Publish a store where people get datasets: image folder, WebDataset tar shards or Parquet.

`release_store(STORE, OUT, fmt)` writes every split the store holds into OUT (schema mtlue-release/1):

    OUT/release.json    schema, format, tasks, image_shape, splits {split: {count, files}}, protection,
                        verification, source, store_manifest_sha256, image_encoding "png", software
    OUT/README.md       dataset card generated from the store (card.py)
    OUT/croissant.json  MLCommons Croissant 1.0 metadata (croissant.py)
    OUT/SHA256SUMS      "<sha256>  <relative path>" for every other file of OUT, sorted by path

    imagefolder  OUT/<split>/metadata.csv (file_name, index, <task>…; an empty cell = missing label)
                 OUT/<split>/<index:08d>.png
    webdataset   OUT/<split>/shard-<k:06d>.tar, 1000 samples each, key "<index:08d>" with members
                 "<key>.png" and "<key>.json" = {"index": int, "labels": {task: value or null}}
    parquet      OUT/<split>/part-<k:05d>.parquet, 10,000 rows each: image (HF Image {bytes, path}),
                 index int64, one column per task (int64 classes, float32 regression; null = missing)

Samples are in store order. Every image is the PNG that PIL encodes from exactly the stored uint8
pixels ("L" for one channel, "RGB" for three; compress_level 6, no optimize), so a reload through the
consumer's library gives the stored bytes, and the same store gives byte-identical files. Nothing of
the clean originals or the generator is written. OUT is built in a sibling `OUT.partial-XXXX` and
renamed at the end: it is either the complete release or absent.
"""

from mtlue.release.build import FORMATS, SCHEMA, release_store

__all__ = ["FORMATS", "SCHEMA", "release_store"]
