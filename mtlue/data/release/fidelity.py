"""What a re-encoding or resize did to a release, a plain image folder or a store (JPEG removes the protection)."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np

from mtlue.data.release.layout import (IMAGE_EXTENSIONS, IMAGE_MODES, LOSSY_FORMATS, RELEASE_NAME, parquet_module,
                                       read_release)
from mtlue.errors import StoreError


class _ImageTally:
    """Counts the images that differ from what a lossless release holds, with one example of each."""

    def __init__(self, expected: tuple | None):
        self.expected = expected  # (width, height, mode), or None: the folder's most common one
        self.total, self.formats, self.shapes = 0, {}, {}

    def add(self, data_or_path, name: str) -> None:
        from PIL import Image

        self.total += 1
        try:
            with Image.open(data_or_path if isinstance(data_or_path, str) else io.BytesIO(data_or_path)) as image:
                found, shape = image.format or "unknown", (*image.size, image.mode)
        except (OSError, ValueError, SyntaxError):
            found, shape = "unreadable", None
        self.formats.setdefault(found, [0, name])[0] += 1
        if shape is not None:
            self.shapes.setdefault(shape, [0, name])[0] += 1

    def warnings(self, where: str) -> list:
        out = []
        for found, (count, example) in sorted(self.formats.items()):
            if found in LOSSY_FORMATS:
                out.append(f"{where}: {count} of {self.total} images are {found} (e.g. {example}): lossy "
                           "re-encoding changes the pixels and likely removes the protection; publish the PNGs")
            elif found == "unreadable":
                out.append(f"{where}: {count} of {self.total} images cannot be read (e.g. {example})")
            elif found != "PNG":
                out.append(f"{where}: {count} of {self.total} images are {found}, not PNG (e.g. {example}): "
                           "check that the conversion kept every pixel")
        expected = self.expected or (max(self.shapes, key=lambda k: self.shapes[k][0]) if self.shapes else None)
        said = "the release's image_shape is" if self.expected else "most are"
        for shape, (count, example) in sorted(self.shapes.items()):
            if shape != expected:
                out.append(f"{where}: {count} of {self.total} images are {shape[0]}x{shape[1]} {shape[2]} "
                           f"(e.g. {example}), {said} {expected[0]}x{expected[1]} {expected[2]}: resized or "
                           "converted images no longer carry the perturbation as it was made")
        return out


def fidelity_warnings(path: str) -> list:
    """What in a release, a plain image folder or a store has lost protection-relevant fidelity.

    Lossy image files (JPEG), files that are not PNG, and image sizes or modes that differ from
    release.json's image_shape (a plain folder: from its most common size) or, for a store, shards
    whose images differ from the manifest's image_shape. Reads image headers only.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise StoreError(f"{path}: not a directory (a store, a release or an image folder)")
    if os.path.isfile(os.path.join(path, "manifest.json")):
        return _store_warnings(path)
    if not os.path.isfile(os.path.join(path, RELEASE_NAME)):
        tally = _ImageTally(None)
        for name in _image_files(path):
            tally.add(os.path.join(path, name), name)
        return tally.warnings(path)
    release = read_release(path)
    height, width, channels = (int(v) for v in release["image_shape"])
    out = [] if release.get("image_encoding", "png") == "png" else [
        f"{path}: {RELEASE_NAME} records image_encoding {release.get('image_encoding')!r}, not png"]
    for split in release["splits"]:
        tally = _ImageTally((width, height, IMAGE_MODES.get(channels, "?")))
        folder = os.path.join(path, split)
        listed = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if release["format"] == "imagefolder":
            for name in _image_files(folder):
                tally.add(os.path.join(folder, name), f"{split}/{name}")
        elif release["format"] == "webdataset":
            for name in (n for n in listed if n.endswith(".tar")):
                with tarfile.open(os.path.join(folder, name), "r:") as tar:
                    for member in tar:
                        if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                            tally.add(tar.extractfile(member).read(), f"{split}/{name}:{member.name}")
        else:
            pq = parquet_module(path)
            for name in (n for n in listed if n.endswith(".parquet")):
                column = pq.read_table(os.path.join(folder, name), columns=["image"]).column("image").combine_chunks()
                for row, data in enumerate(column.field("bytes").to_pylist()):
                    tally.add(data or b"", f"{split}/{name}: row {row}")
        out += tally.warnings(f"{path} {split}")
    return out


def _image_files(folder: str) -> list:
    """Relative paths of the image files under `folder` (by extension), sorted."""
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in files if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _store_warnings(store_dir: str) -> list:
    import h5py

    from mtlue.store.manifest import read_manifest, store_file

    manifest = read_manifest(store_dir)
    expected = tuple(manifest["image_shape"])
    out = []
    for split, record in manifest["splits"].items():
        for number, shard in enumerate(record["shards"]):
            path = store_file(store_dir, shard["file"], f"split {split!r} shard {number}")
            try:
                with h5py.File(path, "r") as f:
                    shape, dtype = tuple(f["images"].shape[1:]), f["images"].dtype
            except (OSError, KeyError) as exc:
                out.append(f"{path}: cannot read its images ({exc})")
                continue
            if shape != expected or dtype != np.uint8:
                out.append(f"{path}: images are {shape} {dtype}, the manifest's image_shape is {expected} uint8")
    return out
