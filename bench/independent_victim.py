"""An attacker written apart from mtlue: reads stores with h5py alone and trains its own CNN.

It imports nothing from mtlue. It reads `STORE/train.h5` (images, labels, masks and the tasks attribute,
as the store format documents them) from the release, and the clean test split from a clean store
(`mtlue export SOURCE CLEAN`), trains a plain 3-block conv-BN-ReLU-maxpool CNN with one linear head per
classification task (Adam 1e-3, batch 128, cross-entropy per task, summed), and scores the clean test split
after the last epoch. `--crop` adds random crop with 4 px zero padding (its own code). It prints and
writes JSON: per task the score (balanced accuracy for binary tasks, accuracy for multiclass) and chance
(0.5, or the majority train class).

Retained learnability compares two runs: `--reference` names the JSON of the same victim trained on the
clean store, and the output then holds (protected − chance)/(clean − chance) per task and the average
weighted by clean − chance.

    python bench/independent_victim.py RELEASE CLEAN --out r.json [--crop] [--epochs 8] [--reference c.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_split(path: str) -> tuple:
    """(images uint8 NHWC, {task: labels}, {task: mask}, tasks) from one split's virtual dataset file."""
    with h5py.File(path, "r") as f:
        tasks = [t for t in json.loads(f.attrs["tasks"]) if t["kind"] in ("binary", "multiclass")]
        images = f["images"][...]
        labels = {t["name"]: f["labels"][t["name"]][...].astype(np.int64) for t in tasks}
        masks = {t["name"]: (f["masks"][t["name"]][...].astype(bool) if "masks" in f and t["name"] in f["masks"]
                             else np.ones(len(images), bool)) for t in tasks}
    return images, labels, masks, tasks


class PlainCNN(nn.Module):
    def __init__(self, channels: int, heads: list, width: int = 32):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
        self.features = nn.Sequential(block(channels, width), block(width, 2 * width), block(2 * width, 4 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList([nn.Linear(4 * width, k) for k in heads])

    def forward(self, x):
        z = self.features(x)
        return [h(z) for h in self.heads]


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to `pad` pixels inside a zero-padded frame (the usual CIFAR crop)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    return _gather_crop(padded, dy, dx, h, w)


def _gather_crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c = padded.shape[:2]
    index_rows = dy[:, None] + torch.arange(h)[None]
    index_cols = dx[:, None] + torch.arange(w)[None]
    batch = torch.arange(n)[:, None, None, None]
    channel = torch.arange(c)[None, :, None, None]
    return padded[batch, channel, index_rows[:, None, :, None], index_cols[:, None, None, :]]


def train_and_score(train: tuple, test: tuple, epochs: int, crop: bool, seed: int) -> dict:
    images, labels, masks, tasks = train
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    names = [t["name"] for t in tasks]
    y_all = {n: torch.from_numpy(labels[n]) for n in names}
    m_all = {n: torch.from_numpy(masks[n]) for n in names}
    model = PlainCNN(x_all.shape[1], [t["num_classes"] for t in tasks])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=generator)
        for lo in range(0, len(order), 128):
            rows = order[lo:lo + 128]
            x = x_all[rows]
            if crop:
                x = random_crop(x, 4, generator)
            outputs = model(x)
            loss = 0.0
            for n, out in zip(names, outputs):
                keep = m_all[n][rows]
                if keep.any():
                    loss = loss + F.cross_entropy(out[keep], y_all[n][rows][keep])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_images, test_labels, test_masks, _ = test
    model.eval()
    x_test = torch.from_numpy(test_images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        predictions = [torch.cat(p) for p in zip(*[[o.argmax(1) for o in model(x_test[lo:lo + 512])]
                                                      for lo in range(0, len(x_test), 512)])]
    scores = {}
    for t, pred in zip(tasks, predictions):
        keep = test_masks[t["name"]]
        y, p = test_labels[t["name"]][keep], pred.numpy()[keep]
        if t["kind"] == "binary":
            score = float(np.mean([np.mean(p[y == c] == c) for c in (0, 1) if np.any(y == c)]))
            chance = 0.5
        else:
            majority = np.bincount(labels[t["name"]][masks[t["name"]]], minlength=t["num_classes"]).argmax()
            score, chance = float(np.mean(p == y)), float(np.mean(y == majority))
        scores[t["name"]] = {"score": score, "chance": chance}
    return scores


def retained(clean: dict, protected: dict) -> dict:
    per_task, gained, taught = {}, 0.0, 0.0
    for name, ref in clean.items():
        gain = ref["score"] - ref["chance"]
        kept = protected[name]["score"] - ref["chance"]
        per_task[name] = kept / gain if gain > 0 else None
        if gain > 0:
            gained += kept
            taught += gain
    return {"per_task": per_task, "weighted": gained / taught if taught > 0 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", help="store directory whose train split is trained on")
    parser.add_argument("clean", help="clean store directory whose test split is scored")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--crop", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default=None, help="JSON of the same victim on the clean store")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train = read_split(f"{args.release}/train.h5")
    test = read_split(f"{args.clean}/test.h5")
    scores = train_and_score(train, test, args.epochs, args.crop, args.seed)
    result = {"release": args.release, "clean": args.clean, "epochs": args.epochs, "crop": args.crop,
              "seed": args.seed, "scores": scores, "wall_s": round(time.perf_counter() - started, 1)}
    if args.reference:
        with open(args.reference) as fh:
            result["retained"] = retained(json.load(fh)["scores"], scores)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result.get("retained") or scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
