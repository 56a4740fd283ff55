"""croissant.json: MLCommons Croissant 1.0 metadata for a release (http://mlcommons.org/croissant/1.0).

Describes the files (FileObject with sha256 per data file, FileSet for the PNGs of an image folder),
one RecordSet per split with the fields image, index and each task's label (a missing label is
null), and the protection record (summarised in the description, in full under `mtlue:protection`).
"""

from __future__ import annotations

import json
import os

from mtlue.store.layout import sha256_file

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
MTLUE_NAMESPACE = "urn:mtlue:"  # mtlue has no web home to name; a URN is a valid IRI

CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "equivalentProperty": "cr:equivalentProperty", "samplingRate": "cr:samplingRate",
    "transform": "cr:transform", "mtlue": MTLUE_NAMESPACE,
}

ENCODING = {".csv": "text/csv", ".png": "image/png", ".tar": "application/x-tar",
            ".parquet": "application/x-parquet", ".json": "application/json"}


def croissant_metadata(release: dict, root: str) -> dict:
    """The JSON-LD document for the release written under `root` (sha256 read from the files there)."""
    fmt = release["format"]
    distribution, record_sets = [], []
    for split, record in release["splits"].items():
        data_files = [f for f in record["files"] if not (fmt == "imagefolder" and f.endswith(".png"))]
        for rel in data_files:
            distribution.append({"@type": "cr:FileObject", "@id": rel, "name": rel, "contentUrl": rel,
                                 "encodingFormat": ENCODING[os.path.splitext(rel)[1]],
                                 "sha256": sha256_file(os.path.join(root, rel))})
        if fmt == "imagefolder":
            distribution.append({"@type": "cr:FileSet", "@id": f"{split}-images", "name": f"{split}-images",
                                 "description": f"the {record['count']} PNG images of split {split}",
                                 "encodingFormat": "image/png", "includes": f"{split}/*.png"})
        elif fmt == "parquet":
            distribution.append({"@type": "cr:FileSet", "@id": f"{split}-parquet", "name": f"{split}-parquet",
                                 "description": f"the Parquet parts of split {split}, in order",
                                 "encodingFormat": "application/x-parquet", "includes": f"{split}/*.parquet"})
        elif fmt == "webdataset":
            for member, encoding in (("png", "image/png"), ("json", "application/json")):
                distribution.append({"@type": "cr:FileSet", "@id": f"{split}-{member}", "name": f"{split}-{member}",
                                     "description": f"the .{member} members of the split's tar shards",
                                     "containedIn": [{"@id": rel} for rel in data_files],
                                     "encodingFormat": encoding, "includes": f"*.{member}"})
        record_sets.append(_record_set(release, split, data_files))
    protection = release.get("protection")
    document = {
        "@context": CONTEXT, "@type": "sc:Dataset", "conformsTo": CONFORMS_TO,
        "name": _name(release), "description": _description(release),
        "version": "1.0.0", "distribution": distribution, "recordSet": record_sets,
        "mtlue:release": {"schema": release["schema"], "format": fmt,
                          "store_manifest_sha256": release["store_manifest_sha256"]},
        "mtlue:protection": json.dumps(protection, sort_keys=True) if protection else None,
    }
    verification = release.get("verification")
    if verification:
        document["mtlue:verdict"] = verification.get("verdict")
    return {k: v for k, v in document.items() if v is not None}


def _name(release: dict) -> str:
    source = (release.get("source") or {}).get("name") or "dataset"
    suffix = "mtlue-protected" if release.get("protection") else "mtlue-export"
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in f"{source}-{suffix}")


def _description(release: dict) -> str:
    protection = release.get("protection")
    verification = release.get("verification")
    h, w, c = release["image_shape"]
    text = (f"{h}x{w}x{c} PNG images with the labels of {len(release['tasks'])} task(s), released by mtlue "
            f"as {release['format']}; a missing label is null. ")
    if protection:
        text += (f"Protected with mtlue: method {protection.get('method')}, base {protection.get('base')}, "
                 f"epsilon {protection.get('epsilon')} {protection.get('epsilon_units', '1/255')}, seed "
                 f"{protection.get('seed')}. ")
        text += (f"Verification verdict: {verification.get('verdict')}. " if verification
                 else "Not verified: run mtlue verify. ")
        text += "Keep PNG: re-encoding to JPEG or resizing removes the protection. See README.md."
    else:
        text += "Not protected: the images are as exported."
    return text


def _record_set(release: dict, split: str, data_files: list) -> dict:
    fmt = release["format"]
    if fmt == "imagefolder":
        table = {"fileObject": {"@id": data_files[0]}}
        image = {"source": {"fileSet": {"@id": f"{split}-images"}, "extract": {"fileProperty": "content"}}}
        # the join: metadata.csv's file_name column against the file names of the PNG file set
        by_name = {"fileSet": {"@id": f"{split}-images"}, "extract": {"fileProperty": "filename"}}
        fields = [_field(split, "file_name", "sc:Text", "the image's file name in the split directory",
                         {"source": {**table, "extract": {"column": "file_name"}}, "references": by_name})]
        columns = lambda name: {"source": {**table, "extract": {"column": name}}}  # noqa: E731
    elif fmt == "parquet":
        source = {"fileSet": {"@id": f"{split}-parquet"}}
        image = {"source": {**source, "extract": {"column": "image"}, "transform": {"jsonPath": "bytes"}}}
        fields = []
        columns = lambda name: {"source": {**source, "extract": {"column": name}}}  # noqa: E731
    else:  # webdataset: labels live in the .json members
        image = {"source": {"fileSet": {"@id": f"{split}-png"}, "extract": {"fileProperty": "content"}}}
        fields = []
        columns = None
    fields.append(_field(split, "image", "sc:ImageObject", "the stored pixels, PNG-encoded", image))
    if columns is not None:
        fields.append(_field(split, "index", "sc:Integer", "the sample's stable index in the store", columns("index")))
        for task in release["tasks"]:
            kind = "sc:Float" if task["kind"] == "regression" else "sc:Integer"
            fields.append(_field(split, task["name"], kind, _task_text(task), columns(task["name"])))
    description = f"split {split}: {release['splits'][split]['count']} samples in store order"
    if fmt == "webdataset":
        description += ("; index and labels are in each sample's <key>.json member as "
                        '{"index": int, "labels": {task: value or null}}, tasks: '
                        + ", ".join(f"{t['name']} ({_task_text(t)})" for t in release["tasks"]))
    return {"@type": "cr:RecordSet", "@id": split, "name": split, "description": description, "field": fields}


def _task_text(task: dict) -> str:
    if task["kind"] == "regression":
        return "regression target (float32); null when missing"
    return f"{task['kind']} label in 0..{task['num_classes'] - 1}; null when missing"


def _field(split: str, name: str, data_type: str, description: str, extra: dict) -> dict:
    return {"@type": "cr:Field", "@id": f"{split}/{name}", "name": name, "description": description,
            "dataType": data_type, **extra}
