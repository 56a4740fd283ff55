"""Cost and quality of MTL-UE per base (em, tap, sep) on `photos`, as ratios measured in this run.

(i)   protection time: a full `protect_source` run with the CLI defaults (`--method mtlue --base B`:
      generator training, and for tap/sep the clean surrogate's training, included) over the wall
      time of training one clean victim (small_cnn, --epochs, batch 128, tested every epoch);
(ii)  retained learnability of the protected store against that victim, on the clean test split,
      scored by the verdict's own functions (`mtlue.verify.task_scores`, `VictimRow.learnability`):
      per task (protected − chance)/(clean − chance), and their clean-gain-weighted mean;
(iii) throughput of the trained generator's forward pass over the train images against per-sample
      PGD-20 (L∞ 8/255, step 0.8/255, the base's targets) through a small_cnn, as bench_protect does.
The clean victim is trained once and is every base's reference. Everything is written to a temporary
directory and removed. Asserts nothing about timings.

    python bench/bench_cost_quality.py [--n 2000] [--bases em,tap,sep] [--epochs 8] [--device auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtlue.data import open_source
from mtlue.data.base import batch_tensors
from mtlue.protect.objectives import BASE_LOSSES
from mtlue.runtime import resolve_device
from mtlue.train import TrainConfig, train_model
from mtlue.verdict import VerdictRules, VictimRow

BATCH_SIZE = 128


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def victim_config(epochs: int) -> TrainConfig:
    return TrainConfig(backbone="small_cnn", epochs=epochs, batch_size=BATCH_SIZE, seed=0)


def train_victim(train_source, test_source, epochs: int, device) -> tuple[dict, float]:
    """(history, wall seconds) of one victim trained on `train_source`'s train split, tested on `test_source`'s test."""
    synchronize(device)
    start = time.perf_counter()
    result = train_model(victim_config(epochs), train_source, test_source, train_source.tasks, device, progress=False)
    synchronize(device)
    return result.history, time.perf_counter() - start


def protect_once(source, base: str, tmp: Path, device) -> tuple[object, Path, float]:
    """(protected store as a Source, work dir, wall seconds) of `mtlue protect --method mtlue --base BASE`."""
    from mtlue.protect import protect_config
    from mtlue.protect.driver import protect_source

    config = protect_config({"method": "mtlue", "base": base, "seed": 0})  # exactly the CLI defaults
    store_dir, work_dir = tmp / f"protected-{base}", tmp / f"protected-{base}.work"
    synchronize(device)
    start = time.perf_counter()
    protect_source(source, store_dir, config, device, work_dir=work_dir, progress=False)
    synchronize(device)
    return open_source(str(store_dir)), work_dir, time.perf_counter() - start


def learnability(tasks, clean_history: dict, protected_history: dict):
    """The verdict's VictimRow for one protected victim against the clean one (binary: balanced accuracy)."""
    from mtlue.verify import task_scores

    return VictimRow("bench", "ew", tasks=task_scores(tasks, clean_history, protected_history,
                                                       VerdictRules().binary_metric))


def generator_images_per_s(source, generator_path: Path, device) -> float:
    """Images/s of G(x, y) alone over the train images (eval mode, no grad, tensors prepared beforehand)."""
    from mtlue.models.generator import load_generator

    generator, _ = load_generator(generator_path, device)
    generator.eval()
    batches = [batch_tensors(b, device) for b in source.batches("train", BATCH_SIZE)]
    with torch.no_grad():
        generator(*batches[0])  # warm-up: kernels and the allocator
        synchronize(device)
        start = time.perf_counter()
        for x, labels, masks in batches:
            generator(x, labels, masks)
        synchronize(device)
    return source.size("train") / (time.perf_counter() - start)


def pgd_images_per_s(source, base: str, device, steps: int = 20) -> float:
    """Images/s of per-sample PGD-20 (L∞ 8/255, step 0.8/255) toward the base's targets through a small_cnn
    (untrained: the speed does not depend on the weights), over the same train images."""
    from mtlue.attacks import PGD
    from mtlue.models.mtl import build_model
    from mtlue.protect.objectives import base_targets
    from mtlue.protect.surrogate import freeze

    torch.manual_seed(0)
    model = freeze(build_model(source.tasks, "small_cnn", source.image_shape[2], source.image_shape[0]).to(device))
    batches = [batch_tensors(b, device) for b in source.batches("train", BATCH_SIZE)]

    def attack(x, labels, masks, attack_steps):
        targets, targeted = base_targets(base, source.tasks, labels)
        PGD(model, eps=8 / 255, alpha=0.8 / 255, steps=attack_steps, random_start=False, objective="total",
            targeted=targeted)(x, targets, masks)

    attack(*batches[0], 1)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for x, labels, masks in batches:
        attack(x, labels, masks, steps)
    synchronize(device)
    return source.size("train") / (time.perf_counter() - start)


def bench_base(base: str, source, clean_history: dict, clean_seconds: float, epochs: int, tmp: Path, device) -> dict:
    from mtlue.protect.mtlue_method import GENERATOR_FILE
    from mtlue.verify import check_victim_inputs

    log(f"{base}: protecting {source.size('train')} images (CLI defaults)")
    protected, work_dir, protect_s = protect_once(source, base, tmp, device)
    check_victim_inputs(protected, source)  # the checks `mtlue verify` makes before training on a store
    log(f"{base}: protected in {protect_s:.1f} s; training the victim on the store")
    protected_history, protected_victim_s = train_victim(protected, source, epochs, device)
    row = learnability(source.tasks, clean_history, protected_history)
    log(f"{base}: timing the generator and PGD-20")
    generator_rate = generator_images_per_s(source, work_dir / GENERATOR_FILE, device)
    pgd_rate = pgd_images_per_s(source, base, device)
    return {
        "base": base, "protect_seconds": protect_s, "clean_victim_seconds": clean_seconds,
        "protect_over_victim": protect_s / clean_seconds, "protected_victim_seconds": protected_victim_s,
        "generator_epochs": (protected.manifest.get("protection") or {}).get("generator_epochs"),
        "learnability": row.learnability, "clean_gain": row.clean_gain,
        "tasks": {t.task: {"metric": t.metric, "chance": t.chance, "clean": t.clean, "protected": t.protected_last,
                           "learnability": t.learnability, "weight": t.weight} for t in row.tasks},
        "generator_images_per_s": generator_rate, "pgd20_images_per_s": pgd_rate,
        "generator_over_pgd20": generator_rate / pgd_rate,
    }


def _fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    print(f"MTL-UE cost and quality on {result['source']} (victim small_cnn, {result['epochs']} epochs, batch "
          f"{BATCH_SIZE}; {result['device']}, {result['threads']} threads, torch {result['torch']})")
    print()
    print("| base | protect s | clean victim s | protect / victim | learnability | generator img/s | PGD-20 img/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["rows"]:
        print(f"| {row['base']} | {row['protect_seconds']:.1f} | {row['clean_victim_seconds']:.1f} | "
              f"{row['protect_over_victim']:.2f} | {_fmt(row['learnability'])} | {row['generator_images_per_s']:.0f} | "
              f"{row['pgd20_images_per_s']:.1f} | {row['generator_over_pgd20']:.1f}x |")
    print()
    gain, floor = result["clean_victim"]["clean_gain"], result["clean_victim"]["min_clean_gain"]
    print(f"clean victim: mean clean gain over chance {_fmt(gain)}"
          + ("" if gain is not None and gain >= floor else
             f" (< {floor:g}: the verdict would call this INCONCLUSIVE; the learnability above proves little)"))
    for row in result["rows"]:
        cells = " · ".join(f"{name} {_fmt(t['learnability'])} ({t['metric']}: clean {_fmt(t['clean'])}, protected "
                           f"{_fmt(t['protected'])}, chance {_fmt(t['chance'])})" for name, t in row["tasks"].items())
        print(f"{row['base']} per task: {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="train images of photos (test: max(200, n/5))")
    parser.add_argument("--bases", default="em,tap,sep", help="comma-separated MTL-UE bases")
    parser.add_argument("--epochs", type=int, default=8, help="victim epochs (clean and protected)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    unknown = [b for b in bases if b not in BASE_LOSSES]
    if unknown or not bases:
        parser.error(f"--bases {args.bases!r}: comma-separated, each one of {', '.join(BASE_LOSSES)}")
    device = resolve_device(args.device)
    spec = f"photos:n={args.n},size=32,seed=0"
    source = open_source(spec)
    log(f"training the clean victim ({args.epochs} epochs)")
    clean_history, clean_seconds = train_victim(source, source, args.epochs, device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for base in bases:
            rows.append(bench_base(base, source, clean_history, clean_seconds, args.epochs, Path(tmp), device))
    result = {"source": spec, "epochs": args.epochs, "device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "victim": {"backbone": "small_cnn", "batch_size": BATCH_SIZE, "seed": 0},
              "clean_victim": {"seconds": clean_seconds, "last": clean_history["last"], "chance": clean_history["floor"],
                               "clean_gain": rows[0]["clean_gain"], "min_clean_gain": VerdictRules().min_clean_gain},
              "rows": rows}
    print_table(result)
    if args.json:
        from mtlue.jsonio import write_json

        write_json(args.json, result)


if __name__ == "__main__":
    main()
