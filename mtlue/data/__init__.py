"""Multi-task data sources and the registry keyed by SOURCE spec strings.

Spec strings: `digits` · `shapes[:n=…,size=…,seed=…]` · `scenes[:n=…,size=…,seed=…,mixed=…]` ·
`folder:PATH` · `celeba:PATH` ·
`utkface:PATH` · `chestxray14:PATH` · `nyuv2:PATH` · a path to an mtlue store · a path to an mtlue
release (image folder, WebDataset or Parquet, written by `mtlue release`).
"""

from __future__ import annotations

import os

from mtlue.data.base import Batch, Sample, Source, SourceDataset, TaskSpec
from mtlue.errors import SourceError
from mtlue.registry import load_registered

# short name -> "module:Class"; imported on first use so `import mtlue.data` stays cheap.
SOURCES = {
    "digits": "mtlue.data.digits:DigitsSource",
    "shapes": "mtlue.data.shapes:ShapesSource",
    "scenes": "mtlue.data.scenes:ScenesSource",
    "nyuv2": "mtlue.data.nyuv2:NYUv2Source",
    "photos": "mtlue.data.photos:PhotosSource",
    "folder": "mtlue.data.folder:FolderSource",
    "celeba": "mtlue.data.celeba:CelebASource",
    "utkface": "mtlue.data.utkface:UTKFaceSource",
    "chestxray14": "mtlue.data.chestxray14:ChestXray14Source",
    "shards": "mtlue.data.shards:ShardSource",
    "release": "mtlue.data.release:ReleaseSource",
}


def source_class(name: str):
    return load_registered(SOURCES, name, "source", SourceError)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split `name[:arg]` into (name, arg); a directory holding manifest.json is a store, one holding
    release.json a release."""
    if os.path.isfile(os.path.join(spec, "manifest.json")):
        return "shards", spec
    if os.path.isfile(os.path.join(spec, "release.json")):
        return "release", spec
    name, _, arg = spec.partition(":")
    if name not in SOURCES and (os.sep in spec or os.path.exists(spec)):
        raise SourceError(f"{spec}: not a known source, not an mtlue store (no manifest.json) "
                          "and not a release (no release.json)")
    return name, (arg or None)


def open_source(spec: str, seed: int | None = None) -> Source:
    """Build the Source a spec string names. `seed` overrides a source's own default seed."""
    name, arg = parse_spec(spec)
    source = source_class(name).from_spec(arg, seed=seed)
    source.spec = spec if seed is None else f"{spec} (seed {seed})"  # identifies the data in fingerprints
    return source


__all__ = ["Batch", "Sample", "Source", "SourceDataset", "TaskSpec", "SOURCES", "open_source", "parse_spec", "source_class"]
