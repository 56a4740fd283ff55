"""The protection lab: protection settings × attacker victims on one source, each cell cached.

    python bench/lab.py SOURCE --setting 'method=texture' --setting 'method=lsp,fusion=patch,norm=linf' \\
        [--victims indep,indep_crop,resnet18] [--quick] [--lab-dir lab] [--results results/lab-NAME.json]

A setting is `mtlue protect` options as key=value pairs (epsilon in 1/255 units; default 8). For each
setting the lab protects SOURCE with `mtlue protect` into LAB/stores/<key>/ (timed: the cost), computes
the diagnostics (mtlue.diagnostics: δ probe, intra-class variance, budget stored, and, unless --quick,
the one-epoch shortcut speed), and trains every victim on the release and on a clean export of SOURCE:

- `indep`, `indep_crop`: bench/independent_victim.py (h5py + its own CNN, nothing from mtlue), 8 epochs,
  without and with random crop;
- `resnet18`: the literature's attacker through `mtlue train` (the `resnet18` profile preset's settings:
  torchvision ResNet-18 (ImageNet stem), SGD 0.1 momentum 0.9, cosine, standard augmentation, 15 epochs;
  `mtlue train` has no weight-decay option, so it keeps its 1e-4);
- `small_cnn`, `sgd_resnet8`: mtlue's own demo victims (`plain` and `sgd` profiles of pipelines/digits.toml).

A release is reused while its setting and the protection code (mtlue/protect, data, store, models, augment,
attacks: file digests, committed or not) are unchanged; a cell (release, victim) is stored in
LAB/cells/<key>.json, its key a digest of every input (the release's and the clean store's shard checksums,
victim, epochs, seed, the victim's code), so a rerun reuses every cell that exists and adding a setting or a
victim runs only the new cells. --quick trains victims 3 epochs (15 → 6 for
resnet18) and skips the shortcut-speed diagnostic: for iteration, not for reporting.
Prints the table (retained learnability, diagnostics, cost) and writes it as a results/ JSON when asked.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VICTIMS = ("indep", "indep_crop", "resnet18", "small_cnn", "sgd_resnet8")
TRAIN_VICTIMS = {
    # mtlue train options per victim (full epochs; --quick divides)
    "resnet18": ["--backbone", "resnet18_imagenet_stem", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
                 "--schedule", "cosine", "--augment", "standard"],
    "small_cnn": ["--backbone", "small_cnn"],
    "sgd_resnet8": ["--backbone", "resnet8", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
                    "--schedule", "cosine", "--augment", "standard"],
}
EPOCHS = {"indep": 8, "indep_crop": 8, "resnet18": 15, "small_cnn": 8, "sgd_resnet8": 8}
QUICK_EPOCHS = {"indep": 3, "indep_crop": 3, "resnet18": 6, "small_cnn": 3, "sgd_resnet8": 3}


def parse_setting(text: str) -> dict:
    setting = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"--setting {text!r}: expected key=value pairs, e.g. method=texture,epsilon=8")
        setting[key.strip().replace("-", "_")] = value.strip()
    setting.setdefault("epsilon", "8")
    return dict(sorted(setting.items()))


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_version(*paths: str) -> str:
    """Digest of the working tree's files under `paths` (relative to the repository): a cached result is
    reused only while the code that produced it is unchanged, committed or not."""
    digest_ = hashlib.sha256()
    for path in paths:
        full = os.path.join(ROOT, path)
        files = [full] if os.path.isfile(full) else sorted(
            os.path.join(d, f) for d, _, names in os.walk(full) for f in names if f.endswith(".py"))
        for name in files:
            digest_.update(os.path.relpath(name, ROOT).encode())
            with open(name, "rb") as fh:
                digest_.update(fh.read())
    return digest_.hexdigest()[:16]


PROTECT_CODE = ("mtlue/protect", "mtlue/data", "mtlue/store", "mtlue/models", "mtlue/augment.py",
                "mtlue/dense_augment.py", "mtlue/attacks")
MTLUE_CODE = ("mtlue",)


def release_id(store: str) -> str:
    """The store's shard checksums: a victim cell depends on the bytes it trains on, not on how they were made."""
    with open(os.path.join(store, "manifest.json")) as fh:
        manifest = json.load(fh)
    return digest([s.get("sha256") for split in manifest.get("splits", {}).values() for s in split.get("shards", [])])


def victim_code(victim: str) -> str:
    return code_version("bench/independent_victim.py") if victim.startswith("indep") else code_version(*MTLUE_CODE)


def run(cmd: list, log) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        log(result.stdout[-2000:] + result.stderr[-4000:])
        raise SystemExit(f"lab: {' '.join(cmd)} exited {result.returncode}")
    return time.perf_counter() - started


def protect(source: str, setting: dict, lab: str, log) -> tuple:
    store = os.path.join(lab, "stores", digest(source, setting, code_version(*PROTECT_CODE)))
    timing = store + ".seconds"
    if not os.path.isfile(os.path.join(store, "manifest.json")) or not os.path.isfile(timing):
        shutil.rmtree(store, ignore_errors=True)
        options = [f"--{k.replace('_', '-')}={v}" for k, v in setting.items()]
        log(f"protect {source} {' '.join(options)}")
        seconds = run(["mtlue", "protect", source, store, "--quiet", *options], log)
        with open(timing, "w") as fh:
            fh.write(f"{seconds:.1f}\n")
    with open(timing) as fh:
        return store, float(fh.read())


def clean_store(source: str, lab: str, log) -> str:
    store = os.path.join(lab, "clean", digest(source))
    if not os.path.isfile(os.path.join(store, "manifest.json")):
        shutil.rmtree(store, ignore_errors=True)
        log(f"export {source}")
        run(["mtlue", "export", source, store], log)
    return store


def victim_scores(victim: str, train_store: str, clean: str, epochs: int, out: str, log) -> dict:
    """Per task {score, chance} of one victim trained on `train_store`, tested on the clean test split."""
    if victim.startswith("indep"):
        cmd = [sys.executable, os.path.join(HERE, "independent_victim.py"), train_store, clean, "--out", out,
               "--epochs", str(epochs)] + (["--crop"] if victim == "indep_crop" else [])
        run(cmd, log)
        with open(out) as fh:
            return json.load(fh)["scores"]
    run_dir = out + ".d"
    shutil.rmtree(run_dir, ignore_errors=True)
    run(["mtlue", "train", train_store, "--test", clean, "--weighting", "ew", "--epochs", str(epochs),
         "--batch-size", "128", "--out", run_dir, "--quiet", *TRAIN_VICTIMS[victim]], log)
    with open(os.path.join(run_dir, "metrics.json")) as fh:
        metrics = json.load(fh)
    return scores_from_history(metrics)


def scores_from_history(metrics: dict) -> dict:
    """mtlue's metrics.json → per classification task the last-epoch score (its verdict metric) and chance."""
    kinds = {t["name"]: t["kind"] for t in metrics["tasks"]}
    return {name: {"score": metrics["last"][name], "chance": metrics["chance"][name][metric]}
            for name, metric in metrics["metric"].items() if kinds.get(name) in ("binary", "multiclass")}


def retained(clean: dict, protected: dict) -> dict:
    """The independent victim's retained learnability (one definition, bench/independent_victim.py), rounded."""
    sys.path.insert(0, HERE)
    from independent_victim import retained as kept

    found = kept(clean, protected)
    return {"weighted": None if found["weighted"] is None else round(found["weighted"], 3),
            "per_task": {n: None if v is None else round(v, 3) for n, v in found["per_task"].items()}}


def cached(path: str, compute):
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    value = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=1)
    os.replace(tmp, path)
    return value


def diagnostics_of(source: str, store: str, epsilon: float, quick: bool) -> dict:
    from mtlue.data import open_source
    from mtlue.diagnostics import diagnose

    return diagnose(open_source(store), open_source(source), epsilon, speed=not quick)


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 3) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--setting", action="append", required=True, help="mtlue protect options, key=value,…")
    parser.add_argument("--victims", default="indep,indep_crop")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lab-dir", default="lab")
    parser.add_argument("--results", default=None, help="also write the table as a results/ JSON here")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    unknown = [v for v in victims if v not in VICTIMS]
    if unknown:
        raise SystemExit(f"--victims: unknown {', '.join(unknown)} (known: {', '.join(VICTIMS)})")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    lab = args.lab_dir
    clean = clean_store(args.source, lab, log)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    rows = []
    for text in args.setting:
        setting = parse_setting(text)
        store, cost = protect(args.source, setting, lab, log)
        release = release_id(store)
        diag = cached(os.path.join(lab, "cells", digest("diag", release, args.quick,
                                                        code_version("mtlue/diagnostics.py")) + ".json"),
                      lambda: diagnostics_of(args.source, store, float(setting["epsilon"]), args.quick))
        for victim in victims:
            def reference():
                log(f"clean victim {victim}")
                return victim_scores(victim, clean, clean, epochs[victim],
                                     os.path.join(lab, "cells", clean_key + ".out"), log)
            clean_key = digest("clean", release_id(clean), victim, epochs[victim], args.seed, victim_code(victim))
            clean_scores = cached(os.path.join(lab, "cells", clean_key + ".json"), reference)
            key = digest("cell", release, release_id(clean), victim, epochs[victim], args.seed, victim_code(victim))

            def protected_cell():
                log(f"victim {victim} on {text}")
                t0 = time.perf_counter()
                scores = victim_scores(victim, store, clean, epochs[victim], os.path.join(lab, "cells", key + ".out"), log)
                return {"scores": scores, "wall_s": round(time.perf_counter() - t0, 1)}
            cell = cached(os.path.join(lab, "cells", key + ".json"), protected_cell)
            kept = retained(clean_scores, cell["scores"])
            speed = diag.get("shortcut_speed") or {}
            rows.append([text, victim, kept["weighted"], json.dumps(kept["per_task"]),
                         mean(diag["shortcut_presence"].values()), mean(diag["intra_class_variance"].values()),
                         mean(speed.get("release_fit_after_1_epoch", {}).values()),
                         mean(speed.get("clean_test_after_1_epoch", {}).values()),
                         round(diag["budget_stored"]["mean_abs_over_epsilon"], 3),
                         round(diag["budget_stored"]["cut_share"], 3), round(cost, 1), cell["wall_s"]])
    columns = ["setting", "victim", "retained", "per task", "probe(δ)", "intra-var", "fit@1ep", "clean@1ep",
               "|δ|/ε", "cut share", "protect s", "victim s"]
    widths = [max(len(str(r[i])) for r in [columns, *rows]) if i != 3 else 0 for i in range(len(columns))]
    for row in [columns, *rows]:
        print("  ".join(str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)) if i != 3))
    for row in rows:
        print(f"{row[0]} | {row[1]}: {row[3]}")
    if args.results:
        import subprocess as sp

        commit = sp.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        payload = {"title": args.title or f"Protection lab: {args.source}",
                   "command": "python bench/lab.py " + " ".join(a if " " not in a and "," not in a else repr(a)
                                                                 for a in (argv if argv is not None else sys.argv[1:])),
                   "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
                   "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - started, 1),
                   "table": {"columns": columns, "rows": rows},
                   "notes": ["retained: (protected − chance)/(clean − chance) on the clean test split after the last "
                             "epoch, averaged over tasks weighted by clean − chance; 0 = perfect protection.",
                             "probe(δ), intra-var, fit@1ep, clean@1ep: means over tasks (mtlue.diagnostics); "
                             "|δ|/ε and cut share: the budget stored.",
                             "protect s / victim s: wall seconds on this machine (cells reused from the cache keep "
                             "the time of the run that computed them)."]}
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        with open(args.results, "w") as fh:
            json.dump(payload, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
