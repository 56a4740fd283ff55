"""What every release format shares: the names, release.json, SHA256SUMS and the paths inside a release."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import PurePosixPath

from mtlue.errors import IntegrityError, StoreError

RELEASE_NAME = "release.json"
RELEASE_SCHEMA = "mtlue-release/1"
SUMS_NAME = "SHA256SUMS"
FORMATS = ("imagefolder", "webdataset", "parquet")
SCALAR_KINDS = ("binary", "multiclass", "regression")
IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> the PIL mode a PNG of them decodes to
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
LOSSY_FORMATS = ("JPEG", "WEBP", "MPO")
INSTALL_HINT = "pip install 'mtlue[release]'"


def read_release(release_dir: str) -> dict:
    """The parsed release.json of a release; StoreError names the file when it is absent or malformed."""
    path = os.path.join(release_dir, RELEASE_NAME)
    if not os.path.isfile(path):
        raise StoreError(f"{release_dir}: no {RELEASE_NAME}, so this is not an mtlue release")
    try:
        with open(path, encoding="utf-8") as fh:
            release = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable release record ({exc})") from None
    if not isinstance(release, dict) or release.get("schema") != RELEASE_SCHEMA:
        found = release.get("schema") if isinstance(release, dict) else type(release).__name__
        raise StoreError(f"{path}: schema {found!r}, expected {RELEASE_SCHEMA!r}")
    for key in ("format", "tasks", "image_shape", "splits"):
        if key not in release:
            raise StoreError(f"{path}: missing key {key!r}")
    if release["format"] not in FORMATS:
        raise StoreError(f"{path}: format {release['format']!r}, expected one of {', '.join(FORMATS)}")
    return release


def read_checksums(release_dir: str) -> dict:
    """SHA256SUMS as {relative path: sha256}, in file order (sha256sum's `<hex>  <path>` lines)."""
    path = os.path.join(release_dir, SUMS_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise IntegrityError(f"{release_dir}: no {SUMS_NAME}, so its files cannot be checked") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: unreadable ({exc})") from None
    sums = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        digest, name = line[:64], line[66:] if line[64:66] in ("  ", " *") else None
        if name is None or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise IntegrityError(f"{path}: line {number} is not '<sha256>  <path>': {line[:80]!r}")
        relative_path(release_dir, name, f"{path}: line {number}")  # verify_release refuses links
        sums[name] = digest.lower()
    return sums


def relative_path(folder: str, name, where: str) -> str:
    """`name` (a relative POSIX path with no `..`) joined to `folder`; StoreError for anything else."""
    parts = name.split("/") if isinstance(name, str) and name else [""]
    if PurePosixPath(name or "/").is_absolute() or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise StoreError(f"{where}: {name!r} is not a relative path inside the release; refusing it")
    return os.path.join(folder, *parts)


def release_path(release_dir: str, name, where: str) -> str:
    """The path of `name` inside the release, also refused when a symbolic link leads it outside."""
    path = relative_path(release_dir, name, where)
    root = os.path.realpath(release_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise StoreError(f"{where}: {name!r} leads outside the release through a symbolic link; refusing it")
    return path


def _files_on_disk(release_dir: str) -> list:
    """Relative POSIX paths of every file under the release except SHA256SUMS; a link is refused."""
    found = []
    for root, dirs, files in os.walk(release_dir):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise IntegrityError(f"{path}: a symbolic link inside the release; a release holds plain files")
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), release_dir).replace(os.sep, "/")
            if relative != SUMS_NAME:
                found.append(relative)
    return sorted(found)


def verify_release(release_dir: str) -> dict:
    """Re-check a release against SHA256SUMS: no listed file missing, none unlisted, every sha256 equal.

    IntegrityError names the first file at fault. Returns {"files", "bytes", "format"}.
    """
    from mtlue.store.layout import sha256_file

    release_dir = os.fspath(release_dir)
    if not os.path.isdir(release_dir):
        raise StoreError(f"{release_dir}: no such release directory")
    listed = read_checksums(release_dir)
    present = _files_on_disk(release_dir)
    for name in listed:
        if not os.path.isfile(os.path.join(release_dir, *name.split("/"))):
            raise IntegrityError(f"{os.path.join(release_dir, name)}: listed in {SUMS_NAME} but missing")
    for name in present:
        if name not in listed:
            raise IntegrityError(f"{os.path.join(release_dir, name)}: not listed in {SUMS_NAME} "
                                 "(added after the release was written)")
    total = 0
    for name, expected in listed.items():
        path = os.path.join(release_dir, *name.split("/"))
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(f"{path}: sha256 {actual[:16]}… but {SUMS_NAME} records {expected[:16]}… "
                                 "(the file changed after the release was written)")
        total += os.path.getsize(path)
    release = read_release(release_dir)
    return {"files": len(listed), "bytes": total, "format": release["format"]}


def split_checksums(sums: dict, split: str) -> list:
    """A split's files as [{"file", "sha256"}] from SHA256SUMS, for fingerprints (verify.data_identity).

    Tars, Parquet parts and metadata.csv one by one; per-sample image files as one entry whose sha256
    covers their SHA256SUMS lines, so a victim's fingerprint stays small for a large image folder.
    """
    mine = {n: sha for n, sha in sums.items() if n.startswith(split + "/")}
    files = [{"file": n, "sha256": sha} for n, sha in mine.items() if not n.lower().endswith(IMAGE_EXTENSIONS)]
    images = [f"{sha}  {n}\n" for n, sha in mine.items() if n.lower().endswith(IMAGE_EXTENSIONS)]
    if images:
        files.append({"file": f"{split}/ ({len(images)} image files)",
                      "sha256": hashlib.sha256("".join(images).encode()).hexdigest()})
    return files


def split_files(release_dir: str, release: dict, split: str, suffix: str) -> list:
    """The split's data files: those release.json lists with `suffix`, else the folder's, sorted."""
    where = f"{os.path.join(release_dir, RELEASE_NAME)}: split {split!r}"
    names = [n for n in release["splits"][split].get("files") or [] if n.endswith(suffix)]
    if not names:
        folder = os.path.join(release_dir, split)
        names = sorted(f"{split}/{n}" for n in (os.listdir(folder) if os.path.isdir(folder) else [])
                       if n.endswith(suffix))
    paths = [release_path(release_dir, n, where) for n in names]
    for path in paths:
        if not os.path.isfile(path):
            raise StoreError(f"{path}: listed for split {split!r} but missing")
    if not paths and int(release["splits"][split]["count"]):
        raise StoreError(f"{release_dir}: split {split!r} has no {suffix} file")
    return paths


def parquet_module(release_dir: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError(f"{release_dir}: reading a Parquet release needs pyarrow ({INSTALL_HINT})") from None
    return pq
