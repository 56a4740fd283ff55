"""mtlue: unlearnable examples for multi-task image datasets (MTL-UE, ICML 2025)."""

from mtlue.version import __version__  # noqa: F401  (mtlue.__version__)


def open_store(path, split: str = "train"):
    """A `torch.utils.data.Dataset` over one split of an mtlue store or a published release.

    PATH is a store (the directory holding manifest.json) or a release written by `mtlue release`
    (image folder, WebDataset or Parquet: the directory holding release.json). Item p is a dict:
    "image" uint8 C×H×W tensor, "labels" and "masks" {task: tensor}, "index" (the stable global id).
    For fast sequential reading, iterate Batches of numpy arrays instead:
    `mtlue.data.open_source(path).batches(split, batch_size)` (or `dataset.source.batches(split, n)`).
    """
    import os

    from mtlue.data import open_source, parse_spec
    from mtlue.errors import SourceError

    path = os.fspath(path)
    if parse_spec(path)[0] not in ("shards", "release"):
        raise SourceError(f"{path}: not an mtlue store (no manifest.json) or release (no release.json)")
    return open_source(path).dataset(split)
