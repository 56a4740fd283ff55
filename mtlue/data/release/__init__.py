"""ReleaseSource: read a published mtlue release (the directory holding release.json) as a Source.

A release is what `mtlue release STORE OUT` writes for a dataset hub: an image folder
(`<split>/metadata.csv` + one PNG per sample), WebDataset tar shards (`<split>/shard-K.tar`, members
`<key>.png` and `<key>.json`) or Parquet parts (a Hugging Face Image column), plus release.json and
SHA256SUMS. Indices, labels and masks come from the metadata without decoding an image; images are
decoded per sample from their file, tar member or Parquet cell. Only PIL, numpy and the standard
library are needed, except for Parquet (pyarrow).

`verify_release` re-checks SHA256SUMS; `fidelity_warnings` says what a re-encoding or resize did to a
release, a plain image folder or a store (JPEG removes the protection).

One module per format (imagefolder, webdataset, parquet) reads a split's metadata and image bytes;
`layout` holds what they share (release.json, SHA256SUMS, paths), `table` the arrays they build,
`source` the Source and `fidelity` the re-encoding checks.
"""

from mtlue.data.release.fidelity import fidelity_warnings
from mtlue.data.release.layout import (FORMATS, IMAGE_EXTENSIONS, IMAGE_MODES, INSTALL_HINT, LOSSY_FORMATS, RELEASE_NAME,
                                       RELEASE_SCHEMA, SCALAR_KINDS, SUMS_NAME, read_checksums, read_release,
                                       relative_path, release_path, split_checksums, verify_release)
from mtlue.data.release.parquet import PART_CACHE_BYTES
from mtlue.data.release.source import ReleaseSource
from mtlue.data.release.table import SplitTable, decode_image, label_value

__all__ = ["FORMATS", "IMAGE_EXTENSIONS", "IMAGE_MODES", "INSTALL_HINT", "LOSSY_FORMATS", "PART_CACHE_BYTES",
           "RELEASE_NAME", "RELEASE_SCHEMA", "SCALAR_KINDS", "SUMS_NAME", "ReleaseSource", "SplitTable",
           "decode_image", "fidelity_warnings", "label_value", "read_checksums", "read_release", "relative_path",
           "release_path", "split_checksums", "verify_release"]
