"""Task specifications, samples, and the Source interface every dataset implements."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from mtlue.errors import SourceError
from mtlue.version import __version__

TASK_KINDS = ("binary", "multiclass", "regression", "segmentation", "depth", "normal")
CLASS_KINDS = ("binary", "multiclass")
DENSE_KINDS = ("segmentation", "depth", "normal")  # a label per pixel (mtlue.data.dense)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task dataset.

    `num_classes` is the number of label values for binary (always 2), multiclass and
    segmentation tasks; 1 for regression and depth; 3 for surface normals. `flip_safe` says the
    label survives a horizontal flip of the image (a face attribute does, "the left digit" does
    not); standard augmentation flips only when every task is flip-safe. It is metadata: two
    specs that differ only in it compare equal.
    """

    name: str
    kind: str
    num_classes: int
    flip_safe: bool = field(default=False, compare=False)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise SourceError(f"task {self.name!r}: unknown kind {self.kind!r} (one of {', '.join(TASK_KINDS)})")
        if self.kind == "binary" and self.num_classes != 2:
            raise SourceError(f"task {self.name!r}: a binary task has num_classes=2, got {self.num_classes}")

    @property
    def is_classification(self) -> bool:
        return self.kind in CLASS_KINDS

    @property
    def is_dense(self) -> bool:
        return self.kind in DENSE_KINDS

    @property
    def output_dim(self) -> int:
        """Width of the model head: 1 logit for binary, C logits for multiclass, 1 for regression."""
        return 1 if self.kind in ("binary", "regression", "depth") else self.num_classes

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "num_classes": self.num_classes, "flip_safe": self.flip_safe}

    @classmethod
    def from_json(cls, d: dict) -> "TaskSpec":
        return cls(name=d["name"], kind=d["kind"], num_classes=int(d["num_classes"]),
                   flip_safe=bool(d.get("flip_safe", False)))


def check_compatible_tasks(mine, theirs, mine_name: str, theirs_name: str) -> None:
    """Raise SourceError unless two task lists hold the same tasks (name, kind, classes) in the same order."""
    mine, theirs = tuple(mine), tuple(theirs)
    if mine == theirs:
        return
    names = {t.name for t in theirs}
    for task in mine:
        if task.name not in names:
            raise SourceError(f"{theirs_name}: has no task {task.name!r} of {mine_name} "
                              f"(its tasks: {', '.join(t.name for t in theirs)})")
        other = next(t for t in theirs if t.name == task.name)
        if other != task:
            raise SourceError(f"task {task.name!r}: {task.kind}/{task.num_classes} in {mine_name} but "
                              f"{other.kind}/{other.num_classes} in {theirs_name}")
    extra = [t.name for t in theirs if t.name not in {m.name for m in mine}]
    if extra:
        raise SourceError(f"{theirs_name}: has task(s) {', '.join(extra)} that {mine_name} lacks")
    raise SourceError(f"{mine_name} and {theirs_name}: the same tasks in a different order")


@dataclass
class Sample:
    """One sample: stable global `index`, uint8 H×W×C image, labels and missing-label mask."""

    index: int
    image: np.ndarray
    labels: dict
    mask: dict = field(default_factory=dict)


@dataclass
class Batch:
    """A run of samples as arrays: index (N,), images (N,H,W,C) uint8, labels/masks per task."""

    index: np.ndarray
    images: np.ndarray
    labels: dict
    masks: dict

    def __len__(self) -> int:
        return len(self.index)


def label_dtype(task: TaskSpec):
    return np.int64 if task.is_classification or task.kind == "segmentation" else np.float32


class Source:
    """A multi-task dataset with named splits ('train', 'test').

    Subclasses set `name`, `tasks` and `image_shape` and implement `size` and `get`.
    Samples are addressed by position 0..size-1 within a split; `Sample.index` is the
    stable global id. Sources hold no open file handles so they pickle into workers.
    """

    name: str = "source"
    tasks: tuple = ()
    image_shape: tuple = (0, 0, 0)
    spec_help: str = ""  # e.g. "celeba:PATH", shown by `mtlue datasets`
    summary: str = ""  # one line: what the source is and how it splits
    # the MTL-UE generator's encoder stem under --generator-stem auto: "cifar" | "imagenet";
    # None (folders, stores, releases): by image size, mtlue.models.generator.stem_for_size
    generator_stem: str | None = None

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "Source":
        """Build from the part of the spec string after `name:` (None when absent)."""
        raise NotImplementedError

    @classmethod
    def task_help(cls) -> list:
        """Lines describing the tasks for `mtlue datasets` (no data is read)."""
        return []

    def splits(self) -> tuple:
        return ("train", "test")

    def size(self, split: str) -> int:
        raise NotImplementedError

    def get(self, split: str, position: int) -> Sample:
        raise NotImplementedError

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise SourceError(f"{self.name}: no task {name!r} (tasks: {', '.join(t.name for t in self.tasks)})")

    def check_split(self, split: str) -> None:
        if split not in self.splits():
            raise SourceError(f"{self.name}: no split {split!r} (splits: {', '.join(self.splits())})")

    def batches(self, split: str, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Yield consecutive samples of a split as Batch arrays (memory bounded by one batch)."""
        self.check_split(split)
        stop = self.size(split) if stop is None else stop
        for lo in range(start, stop, batch_size):
            samples = [self.get(split, i) for i in range(lo, min(lo + batch_size, stop))]
            yield collate_samples(samples, self.tasks)

    def dataset(self, split: str) -> "SourceDataset":
        self.check_split(split)
        return SourceDataset(self, split)

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """All labels and masks of one task in a split (used for class balance and floors)."""
        labels, masks = [], []
        for batch in self.batches(split, 1024):
            labels.append(batch.labels[task])
            masks.append(batch.masks[task])
        return np.concatenate(labels), np.concatenate(masks)

    def index_array(self, split: str) -> np.ndarray:
        """The stable global index of every sample of a split, in order."""
        self.check_split(split)
        parts = [batch.index for batch in self.batches(split, 1024)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def layout_digest(self) -> str:
        """sha256 over which samples the data holds, without their pixels: tasks, image shape, and per
        split the sample indices, labels and masks, plus `sample_names` (an image folder's file names).
        It survives copying the data elsewhere; `verify` compares it to tell the same source. Cached."""
        cached = getattr(self, "_layout_digest", None)
        if cached is None:
            digest = hashlib.sha256(repr([t.to_json() for t in self.tasks]).encode())
            digest.update(repr(tuple(self.image_shape)).encode())
            for split in self.splits():
                digest.update(f"|split {split} {self.size(split)}|".encode())
                digest.update(np.ascontiguousarray(self.index_array(split), dtype=np.int64).tobytes())
                self.digest_labels(digest, split)
            digest.update(self.sample_names().encode())
            cached = self._layout_digest = digest.hexdigest()
        return cached

    def digest_labels(self, digest, split: str) -> None:
        """Feed a split's labels and masks to `digest` (for `layout_digest`); a source whose labels are
        files (NYUv2's label maps) may hash the files instead of materialising every array."""
        for task in self.tasks:
            labels, masks = self.label_array(split, task.name)
            digest.update(task.name.encode())
            digest.update(np.ascontiguousarray(labels).tobytes())
            digest.update(np.ascontiguousarray(masks, dtype=bool).tobytes())

    def sample_names(self) -> str:
        """What names the samples beyond their indices (file names); empty for generated data."""
        return ""

    def content_digest(self) -> str:
        """sha256 of `layout_digest` and `image_digest`: what stages and victims fingerprint. Cached."""
        cached = getattr(self, "_content_digest", None)
        if cached is None:
            joined = f"{self.layout_digest()} {self.image_digest()}"
            cached = self._content_digest = hashlib.sha256(joined.encode()).hexdigest()
        return cached

    def image_digest(self) -> str:
        """What identifies the pixels; sources override it with something cheaper than the pixels
        themselves (a generated source: its code version and options; files: names, sizes, mtimes)."""
        digest = hashlib.sha256()
        for split in self.splits():
            for batch in self.batches(split, 512):
                digest.update(np.ascontiguousarray(batch.images).tobytes())
        return digest.hexdigest()

    def recorded_origin(self) -> dict | None:
        """For data mtlue wrote (a store, a release): the `source` record of the data it was made from;
        None for original data, which is its own origin."""
        return None

    def origin_content(self) -> str | None:
        """The content digest of the original data (a store or release: the one it records, if any)."""
        recorded = self.recorded_origin()
        return self.content_digest() if recorded is None else recorded.get("content")

    def origin_layout(self) -> str | None:
        """The layout digest of the original data (a store or release: the one it records, if any)."""
        recorded = self.recorded_origin()
        return self.layout_digest() if recorded is None else recorded.get("layout")

    def origin_record(self) -> dict:
        """What a store's manifest records about the data it was written from (`source`)."""
        spec = getattr(self, "spec", None) or self.name
        recorded = self.recorded_origin()
        if recorded is None:
            return {"name": self.name, "spec": spec, "content": self.origin_content(), "layout": self.origin_layout()}
        return {**recorded, "name": recorded.get("name", self.name), "content": self.origin_content(),
                "layout": self.origin_layout(), "copied_from": spec}

    def identity(self) -> dict:
        """The data's identity for fingerprints: the spec it was opened with and its content digest."""
        return {"spec": getattr(self, "spec", None) or self.name, "content": self.content_digest()}


class NumberedSource(Source):
    """A Source numbered train first, then test: sample `position` of a split has index
    `index_offset(split) + position`, so sizes and indices follow from `split_counts()` alone."""

    def split_counts(self) -> dict:
        """{"train": count, "test": count}."""
        raise NotImplementedError

    def size(self, split: str) -> int:
        self.check_split(split)
        return self.split_counts()[split]

    def index_offset(self, split: str) -> int:
        return 0 if split == "train" else self.split_counts()["train"]

    def index_array(self, split: str) -> np.ndarray:
        """offset + position, without rendering or reading a sample."""
        return np.arange(self.size(split), dtype=np.int64) + int(self.index_offset(split))

    def check_position(self, split: str, position: int) -> None:
        if not 0 <= position < self.size(split):
            raise IndexError(f"{self.name} {split}: position {position} out of range 0..{self.size(split) - 1}")


class GeneratedSource(NumberedSource):
    """A Source that builds any run of samples at once with `make_batch(split, positions)`."""

    def make_batch(self, split: str, positions: np.ndarray) -> Batch:
        raise NotImplementedError

    def image_digest(self) -> str:
        """The options the images are drawn from, plus the first rendered batch of each split (which
        catches a change of the rendering code): cheap, and any count of images."""
        options = {k: v for k, v in sorted(vars(self).items()) if isinstance(v, (int, float, str, bool, tuple))}
        digest = hashlib.sha256(f"{type(self).__name__}|{__version__}|{options!r}".encode())
        for split in self.splits():
            positions = np.arange(min(64, self.size(split)))
            digest.update(np.ascontiguousarray(self.make_batch(split, positions).images).tobytes())
        return digest.hexdigest()

    def get(self, split: str, position: int) -> Sample:
        self.check_position(split, position)
        batch = self.make_batch(split, np.asarray([position]))
        labels = {name: values[0].item() if values[0].ndim == 0 else values[0] for name, values in batch.labels.items()}
        masks = {name: bool(values[0]) for name, values in batch.masks.items()}
        return Sample(int(batch.index[0]), batch.images[0], labels, masks)

    def batches(self, split: str, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        self.check_split(split)
        stop = self.size(split) if stop is None else min(stop, self.size(split))
        for lo in range(start, stop, batch_size):
            yield self.make_batch(split, np.arange(lo, min(lo + batch_size, stop)))


def collate_samples(samples: list, tasks) -> Batch:
    index = np.asarray([s.index for s in samples], dtype=np.int64)
    images = np.stack([s.image for s in samples]).astype(np.uint8, copy=False)
    labels, masks = {}, {}
    for t in tasks:
        labels[t.name] = np.stack([np.asarray(s.labels[t.name]) for s in samples]).astype(label_dtype(t))
        masks[t.name] = np.asarray([bool(s.mask.get(t.name, True)) for s in samples], dtype=bool)
    return Batch(index, images, labels, masks)


def sample_to_item(sample: Sample, tasks) -> dict:
    """A training item: uint8 C×H×W image tensor, per-task label and mask tensors, index."""
    image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1)))
    labels = {t.name: torch.as_tensor(np.asarray(sample.labels[t.name]).astype(label_dtype(t))) for t in tasks}
    masks = {t.name: torch.as_tensor(bool(sample.mask.get(t.name, True))) for t in tasks}
    return {"index": torch.as_tensor(sample.index, dtype=torch.int64), "image": image, "labels": labels, "masks": masks}


def label_tensor(values) -> torch.Tensor:
    """Batched labels as training code takes them. Arrays (samples, sources, the store) hold dense labels
    channels-last: segmentation (N,H,W), depth (N,H,W,1), normals (N,H,W,3); tensors hold them as
    images: segmentation int64 (N,H,W) (−1 void), depth (N,1,H,W) (0 invalid), normals (N,3,H,W)
    ((0,0,0) invalid). This is the one place the layout changes."""
    tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values))
    return tensor.permute(0, 3, 1, 2) if tensor.dim() == 4 else tensor


def batch_tensors(batch: Batch, device) -> tuple:
    """A Batch (uint8 N×H×W×C arrays) as (float N×C×H×W images in [0, 1], {task: labels}, {task: masks}) on `device`
    (dense labels as `label_tensor` lays them out)."""
    images = torch.from_numpy(np.ascontiguousarray(batch.images.transpose(0, 3, 1, 2))).to(device).float() / 255.0
    labels = {name: label_tensor(np.asarray(value)).to(device) for name, value in batch.labels.items()}
    masks = {name: torch.from_numpy(np.asarray(value)).to(device) for name, value in batch.masks.items()}
    return images, labels, masks


def item_tensors(items: dict, device) -> tuple:
    """The same for a default-collated batch of `sample_to_item` dicts (a DataLoader's output)."""
    images = items["image"].to(device, non_blocking=True).float().div_(255.0)
    labels = {k: label_tensor(v).to(device, non_blocking=True) for k, v in items["labels"].items()}
    masks = {k: v.to(device, non_blocking=True) for k, v in items["masks"].items()}
    return images, labels, masks


class SourceDataset(torch.utils.data.Dataset):
    """A torch Dataset over one split of a Source; items as `sample_to_item` builds them."""

    def __init__(self, source: Source, split: str):
        self.source = source
        self.split = split
        self.tasks = source.tasks

    def __len__(self) -> int:
        return self.source.size(self.split)

    def __getitem__(self, position: int) -> dict:
        return sample_to_item(self.source.get(self.split, int(position)), self.tasks)
