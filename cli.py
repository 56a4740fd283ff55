"""The `mtlue` command line: parses options, calls the library, prints results.

Library code raises typed errors (mtlue.errors); this module turns them into a
one-line message and a non-zero exit status.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from mtlue.errors import IntegrityError, MtlueError
# protect's defaults are the configs' (a light module); the command passes on only the options given
from mtlue.protect.config import ProtectConfig, SurrogateConfig


def reports_errors(func):
    """The one place errors become messages: library errors and file-system errors (a read-only or
    missing output directory, a full disk) print one line on stderr and exit 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except IntegrityError as exc:
            click.echo(f"verification failed: {exc}", err=True)
            sys.exit(1)
        except MtlueError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p)
            click.echo(f"error: {where + ': ' if where else ''}{exc.strerror or exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mtlue")
def main():
    """mtlue: make a multi-task image dataset unlearnable (MTL-UE) and prove it.

    SOURCE strings: digits · shapes[:n=…,size=…,seed=…] · scenes[:n=…,size=…,seed=…,mixed=…] ·
    folder:PATH · celeba:PATH · utkface:PATH · chestxray14:PATH · nyuv2:PATH · a path to an
    mtlue store · a path to a release
    (written by `mtlue release`).
    """


def _distributed(device):
    """This process's mtlue.distributed.DistContext: under torchrun from its RANK, WORLD_SIZE and LOCAL_RANK
    (read here, the one place mtlue reads them), else a single process on `device`."""
    import atexit

    from mtlue.distributed import DistContext

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext.single(device)
    context = DistContext.start(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")), device)
    atexit.register(context.close)
    return context


# ---- data and store (datasets, export, inspect) ----------------------------------------


@main.command()
@reports_errors
def datasets():
    """List the dataset sources mtlue can read and their tasks."""
    from mtlue.data import SOURCES, source_class

    for name in SOURCES:
        cls = source_class(name)
        click.echo(f"{cls.spec_help}")
        click.echo(f"    {cls.summary}")
        for line in cls.task_help():
            click.echo(f"    - {line}")


@main.command()
@click.argument("source")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--shard-size", default=10000, show_default=True, type=click.IntRange(min=1),
              help="Samples per shard file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store in STORE.")
@click.option("--resume", is_flag=True, help="Finish an interrupted export: keep shards whose sha256 matches.")
@click.option("--seed", type=int, default=None, help="Seed for sources that are generated (e.g. shapes).")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Processes that read/generate images while the main one compresses (0: all in one process) "
                   "[default: 1 for sources of 10,000 samples or more on a multi-core machine, else 0].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def export(source, store, shard_size, overwrite, resume, seed, workers, quiet):
    """Write the train and test splits of SOURCE as a clean (unprotected) HDF5 shard store in STORE.

    STORE gets manifest.json, <split>/shard-NNNNN-of-MMMMM.h5 (gzip+shuffle, fletcher32, sha256 in the
    manifest) and <split>.h5, a virtual dataset over the split's shards readable with plain h5py.
    """
    import time

    from mtlue.data import open_source
    from mtlue.store import export_source

    data = open_source(source, seed=seed)
    if workers is None:
        workers = 1 if (os.cpu_count() or 1) > 1 and sum(data.size(s) for s in data.splits()) >= 10000 else 0
    started = time.perf_counter()
    manifest = export_source(data, store, shard_size=shard_size, overwrite=overwrite, resume=resume,
                             progress=not quiet, spec=source, seed=seed, workers=workers)
    parts = [f"{split} {r['count']} samples in {len(r['shards'])} shard{'s' if len(r['shards']) != 1 else ''}"
             for split, r in manifest["splits"].items()]
    click.echo(f"exported {source} -> {store}: {', '.join(parts)}; "
               f"tasks {', '.join(t['name'] for t in manifest['tasks'])} ({time.perf_counter() - started:.1f} s)")


@main.command("inspect")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True,
              help="Check every shard's sha256, schema, counts and index ranges; exit 1 naming a bad shard.")
@reports_errors
def inspect_store(store, verify):
    """Show what an mtlue store or release holds: splits, shards, tasks and class balance, protection
    record; warn when images lost protection-relevant fidelity (JPEG files, other sizes)."""
    from mtlue.data import parse_spec
    from mtlue.data.release import fidelity_warnings
    from mtlue.store import verify_store
    from mtlue.store.describe import describe_store

    for line in fidelity_warnings(store):
        click.echo(f"warning: {line}", err=True)
    if parse_spec(store)[0] == "release":
        _inspect_release(store, verify)
        return
    summary = verify_store(store) if verify else None  # before reading labels: a damaged shard is named
    info = describe_store(store)
    h, w, c = info["image_shape"]
    src = info["source"] or {}
    click.echo(f"store        {store}")
    click.echo(f"source       {src.get('spec') or src.get('name') or 'unknown'}")
    click.echo(f"image shape  {h}x{w}x{c} uint8 (H x W x C)")
    protection = info["protection"]
    click.echo("protection" + ("" if protection else "   none (clean export)"))
    for key, value in (protection or {}).items():
        click.echo(f"  {key:<22} {_short_value(value)}")
    if info["verification"]:
        click.echo(f"verification {_short_value(info['verification'])}")
    _echo_guidance(protection, info["verification"])
    click.echo("")
    click.echo(f"{'split':<10}{'samples':>10}{'shards':>8}{'MiB':>10}")
    for split, s in info["splits"].items():
        click.echo(f"{split:<10}{s['samples']:>10}{s['shards']:>8}{s['bytes'] / 2**20:>10.1f}")
    click.echo("")
    click.echo(f"{'task':<18}{'kind':<14}{'split':<8}{'labelled':>9}  balance")
    for task in info["tasks"]:
        if not task["balance"]:
            click.echo(f"{task['name']:<18}{task['kind']:<14}{'-':<8}{'-':>9}  (dense map, not summarised)")
        for split, b in task["balance"].items():
            if "fractions" in b:
                balance = " ".join(f"{k}:{f:.2f}" for k, f in enumerate(b["fractions"]))
            elif "mean" in b:
                balance = f"mean {b['mean']:.3g} std {b['std']:.3g}"
            else:
                balance = "-"
            click.echo(f"{task['name']:<18}{task['kind']:<14}{split:<8}{b['labelled']:>9.0%}  {balance}")
    if summary is not None:
        shards = sum(s["shards"] for s in summary["splits"].values())
        click.echo(f"\nverified     {shards} shards OK ({', '.join(summary['checks'])})")


def _inspect_release(path: str, verify: bool) -> None:
    from mtlue.data.release import ReleaseSource, verify_release

    summary = verify_release(path) if verify else None
    release = ReleaseSource(path)
    h, w, c = release.image_shape
    click.echo(f"release      {path} ({release.format})")
    click.echo(f"image shape  {h}x{w}x{c} uint8 (H x W x C), PNG")
    protection = release.protection
    click.echo("protection" + ("" if protection else "   none (clean)"))
    for key, value in (protection or {}).items():
        click.echo(f"  {key:<22} {_short_value(value)}")
    verification = release.release.get("verification")
    click.echo(f"verification {_short_value(verification) if verification else 'none: run mtlue verify'}")
    _echo_guidance(protection, verification)
    for split in release.splits():
        click.echo(f"{split:<10}{release.size(split):>10} samples")
    if summary is not None:
        click.echo(f"\nverified     {summary['files']} files OK (SHA256SUMS)")


def _echo_guidance(protection, verification) -> None:
    """The publication paths that keep (or cost) this protection (mtlue.release.guidance)."""
    from mtlue.release.guidance import publication_guidance

    lines = publication_guidance(protection, verification)
    if lines:
        click.echo("publishing")
        for line in lines:
            click.echo(f"  - {line}")


def _short_value(value, width: int = 72) -> str:
    """One line for a manifest value: long lists as their length, nested values as truncated JSON."""
    import json

    if isinstance(value, list) and len(value) > 8:
        return f"[{len(value)} items]"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["imagefolder", "webdataset", "parquet"]), default="imagefolder",
              show_default=True, help="imagefolder: PNGs + metadata.csv (Hugging Face `datasets`); webdataset: tar "
                                      "shards; parquet: PNG bytes in Parquet.")
@click.option("--overwrite", is_flag=True, help="Replace an existing release in OUT.")
@reports_errors
def release(store, out, fmt, overwrite):
    """Publish STORE as OUT in a format people load: the stored bytes as PNG (lossless), labels with
    missing ones empty, SHA256SUMS, a dataset card (README.md) and Croissant metadata (croissant.json).

    Never re-encode the release as JPEG or resize it: that removes the protection.
    """
    import time

    from mtlue.release import release_store

    started = time.perf_counter()
    record = release_store(store, out, fmt, overwrite=overwrite)
    counts = ", ".join(f"{split} {info['count']}" for split, info in record["splits"].items())
    click.echo(f"wrote {out} ({fmt}: {counts} samples, README.md, croissant.json, SHA256SUMS; "
               f"{time.perf_counter() - started:.1f} s)")


# ---- victim training (train) ------------------------------------------------------------

_NO_CHECK_HELP = "Do not re-check store shards' sha256 against their manifests before training (faster; trusts the bytes)."


def _check_stores(*specs, check: bool = True) -> None:
    """Verify every store or release among `specs` (sha256 of each file against its manifest or
    SHA256SUMS) before it is used."""
    from mtlue.data import parse_spec
    from mtlue.store import verify_store

    from mtlue.data.release import verify_release

    for spec in specs:
        kind = parse_spec(spec)[0] if check and spec else None
        if kind == "shards":
            verify_store(spec)
        elif kind == "release":
            verify_release(spec)


BINARY_METRICS = ("balanced_accuracy", "auc")  # mtlue.metrics.BINARY_METRICS (not imported: keeps --help light)


def _victim_options(func):
    """--optimizer, --momentum, --schedule, --augment: how a victim trains (mtlue.train.TrainConfig)."""
    options = [
        click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
                     help="adam, or sgd with --momentum (Nesterov)."),
        click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum."),
        click.option("--schedule", type=click.Choice(["step", "cosine"]), default="step", show_default=True,
                     help="step: LR x0.1 at 60% and 80% of the epochs; cosine: annealed to 0."),
        click.option("--augment", type=click.Choice(["none", "standard"]), default="none", show_default=True,
                     help="standard: random crop (padding; random-resized crop from 96 px) and a horizontal "
                          "flip only when every task is flip-safe."),
    ]
    for option in reversed(options):
        func = option(func)
    return func



@main.command()
@click.argument("data")
@click.option("--test", "test_spec", default=None, metavar="SOURCE",
              help="Clean source whose 'test' split is evaluated (default: DATA's own test split; a protected store has none).")
@click.option("--weighting", default="ew", show_default=True,
              help="Task weighting: ew, uw, rlw, aligned_mtl, fairgrad (paper), dwa, gradnorm, mgda, pcgrad, cagrad.")
@click.option("--backbone", default="resnet18", show_default=True,
              help="resnet18, resnet50, vgg16_bn, densenet121, vit_b_16, small_cnn.")
@click.option("--epochs", default=60, show_default=True, type=int)
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Learning rate (weight decay 1e-4).")
@_victim_options
@click.option("--binary-metric", type=click.Choice(BINARY_METRICS), default="balanced_accuracy", show_default=True,
              help="Metric of binary tasks (never plain accuracy: an imbalanced task looks learned at its majority class).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Output directory [default: runs/train-<weighting>].")
@click.option("--stl", is_flag=True, help="Single-task learning: one independent network per task.")
@click.option("--grad-space", type=click.Choice(["shared", "representation"]), default="shared", show_default=True,
              help="Gradients the gradient-based weightings combine: exact shared-parameter or representation.")
@click.option("--checkpoint-every", default=0, show_default=True, type=int, help="Also save DIR/checkpoints/epoch_K.pt every N epochs.")
@click.option("--defense", default="none", show_default=True,
              help="Training-time defense: none, grayscale, jpeg<q> (e.g. jpeg10), bdr<bits> (e.g. bdr2), cutout, "
                   "mixup, cutmix, ueraser_lite, at (PGD adversarial training).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
@click.option("--workers", default=0, show_default=True, type=int, help="DataLoader worker processes.")
@click.option("--no-check-store", "no_check_store", is_flag=True, help=_NO_CHECK_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@reports_errors
def train(data, test_spec, weighting, backbone, epochs, batch_size, lr, optimizer, momentum, schedule, augment,
          binary_metric, out_dir, stl, grad_space, checkpoint_every, defense, seed, device, workers, no_check_store,
          quiet):
    """Train a victim multi-task model on DATA and test it on clean data every epoch.

    DATA is any SOURCE or store. Writes DIR/metrics.json (per task and epoch, floor, peak, last,
    mean) and DIR/model.pt, and prints the per-task table.
    """
    import torch

    from mtlue.data import open_source
    from mtlue.defenses import build_defense, canonical_defense_name
    from mtlue.runtime import resolve_device
    from mtlue.train import TrainConfig, check_training_sources, train_model

    defense = canonical_defense_name(defense)
    config = TrainConfig(backbone=backbone, weighting=weighting, epochs=epochs, batch_size=batch_size, lr=lr,
                         grad_space=grad_space, stl=stl, seed=seed, num_workers=workers, checkpoint_every=checkpoint_every,
                         defense=None if defense == "none" else defense, optimizer=optimizer, momentum=momentum,
                         schedule=schedule, augment=augment, binary_metric=binary_metric)
    torch_device = resolve_device(device)
    _check_stores(data, test_spec, check=not no_check_store)
    train_source = open_source(data)
    test_source = open_source(test_spec) if test_spec else train_source
    check_training_sources(train_source, test_source, data, f"--test {test_spec}" if test_spec else data)
    out_dir = out_dir or f"runs/train-{weighting}"
    floor_labels = {t.name: train_source.label_array("train", t.name) for t in train_source.tasks if not t.is_dense}
    hook = build_defense(defense, train_source.tasks, generator=torch.Generator().manual_seed(seed + 7))
    dist = _distributed(torch_device)
    result = train_model(config, train_source.dataset("train"), test_source.dataset("test"), train_source.tasks,
                         dist.device, out_dir=out_dir, defense=hook, progress=not quiet, floor_labels=floor_labels,
                         dist=dist)
    if not dist.is_main:
        return
    history = result.history
    click.echo(f"{'task':<22}{'metric':<19}{'chance':>9}{'peak':>9}{'last':>9}")
    for task in train_source.tasks:  # 9 wide: an angle error reaches 180.0000
        name = task.name
        click.echo(f"{name:<22}{history['metric'][name]:<19}{history['floor'][name]:>9.4f}"
                   f"{history['peak'][name]:>9.4f}{history['last'][name]:>9.4f}")
    mean = history["mean"]
    click.echo(f"{'mean':<41}{mean['floor']:>9.4f}{mean['peak']:>9.4f}{mean['last']:>9.4f}")
    click.echo(f"wrote {out_dir}/metrics.json and {out_dir}/model.pt ({history['wall_seconds']:.0f} s on {torch_device})")


# ---- protection (protect) ----------------------------------------------------------------


def _for(option: str, text: str = "") -> str:
    """Help text prefixed with the methods that read `option`, e.g. "[lsp/ar] How K task patterns combine.";
    where their defaults differ, it names each (the option's own default is then None)."""
    from mtlue.protect import applies_to

    defaults = _method_defaults(option)
    if len(set(map(repr, defaults.values()))) > 1:
        text += " [default: " + ", ".join(f"{m} {v}" for m, v in defaults.items()) + "]"
    return f"[{'/'.join(applies_to(option))}] {text}".rstrip()


def _default(option: str):
    """The default every method that reads `option` shares (None where they differ: see `_for`)."""
    values = list(_method_defaults(option).values())
    return values[0] if values and all(repr(v) == repr(values[0]) for v in values) else None


def _method_defaults(option: str) -> dict:
    import dataclasses

    from mtlue.protect import METHODS

    return {name: f.default for name, entry in METHODS.items() for f in dataclasses.fields(entry.settings)
            if (f.metadata.get("option") or f.name) == option}


def _surrogate_help(text: str) -> str:
    from mtlue.protect import surrogate_methods

    return f"[{'/'.join(surrogate_methods())}] {text}"


@main.command()
@click.argument("source")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--method", default=ProtectConfig.method, show_default=True,
              help="mtlue (generator) · em · tap · sep (per-sample PGD baselines) · lsp · ar (class-wise baselines). "
                   "Options marked [..] apply to those methods only.")
@click.option("--epsilon", type=float, default=ProtectConfig.epsilon, show_default=True,
              help="L∞ budget in 1/255 units.")
@click.option("--batch-size", type=int, default=ProtectConfig.batch_size, show_default=True)
@click.option("--protect-tasks", default=None, help="Comma-separated tasks to protect (default: all).")
@click.option("--poison-rate", type=float, default=ProtectConfig.poison_rate, show_default=True,
              help="Fraction of train samples that get δ (a seeded random subset).")
@click.option("--seed", type=int, default=ProtectConfig.seed, show_default=True)
@click.option("--surrogate-backbone", default=SurrogateConfig.backbone, show_default=True,
              help=_surrogate_help("Surrogate model backbone."))
@click.option("--surrogate-epochs", type=int, default=SurrogateConfig.epochs, show_default=True,
              help=_surrogate_help("Clean surrogate training epochs (paper 60)."))
@click.option("--surrogate", "surrogate_path", default=None, type=click.Path(exists=True),
              help=_for("surrogate_path", "Clean surrogate checkpoint (or a directory of checkpoints for SEP) "
                                          "instead of training one (mtlue: --base tap or sep)."))
@click.option("--epochs", type=int, default=_default("epochs"), show_default=True,
              help=_for("epochs", "Cap on outer iterations: mtlue's generator passes (paper up to 100), "
                                  "em's rounds of surrogate steps and noise updates."))
@click.option("--base", type=click.Choice(["em", "tap", "sep"]), default=_default("base"), show_default=True,
              help=_for("base", "Base loss: em (surrogate trained alternately), tap (fixed clean surrogate), "
                                "sep (ensemble of clean-run checkpoints)."))
@click.option("--lr", type=float, default=_default("lr"), show_default=True,
              help=_for("lr", "Generator Adam learning rate (paper 1e-3)."))
@click.option("--lambda-intra", type=float, default=_default("lambda_intra"), show_default=True,
              help=_for("lambda_intra", "Intra-task embedding regulariser weight (paper 20; released code 10)."))
@click.option("--lambda-inter", type=float, default=_default("lambda_inter"), show_default=True,
              help=_for("lambda_inter", "Inter-task embedding regulariser weight (paper 100; released code 200)."))
@click.option("--generator", "generator_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help=_for("generator_path", "Use this trained generator checkpoint; skip generator training."))
@click.option("--generator-width", type=int, default=_default("generator_width"), show_default=True,
              help=_for("generator_width", "Generator stem channels (paper 64); smaller is faster on CPU."))
@click.option("--generator-stem", type=click.Choice(["auto", "cifar", "imagenet"]), default=_default("generator_stem"),
              show_default=True,
              help=_for("generator_stem", "Generator encoder stem: cifar (3x3, the reference's for CelebA and "
                                          "UTKFace), imagenet (7x7/2 + maxpool, its ChestX-ray14 one), auto (the "
                                          "source's; folders: imagenet from 224 px)."))
@click.option("--samples-per-epoch", type=int, default=_default("samples_per_epoch"), show_default=True,
              help=_for("samples_per_epoch", "Samples per generator outer iteration (0 = the whole train split, "
                                             "as the paper)."))
@click.option("--augment", type=click.Choice(["auto", "crop_flip", "crop", "none"]), default=_default("augment"),
              show_default=True,
              help=_for("augment", "EOT augmentation of x+δ before the surrogate: the attacker's standard "
                                   "augmentation (auto: random crop, plus flip when every task is flip-safe; a flip "
                                   "changes digits' left/right labels)."))
@click.option("--robust", default=None,
              help=_for("robust", "Defenses in the generator's loop (EOT), comma-separated: jpeg (differentiable "
                                  "JPEG, quality 10-30), bdr (2-bit, straight-through), gray (RGB only), erase "
                                  "(cutout, cutmix, mixup, UEraser-lite), at (REM-style PGD adversary, radius ε/2) "
                                  "[default: none]."))
@click.option("--clamp/--no-clamp", "clamp_inputs", default=_default("clamp_inputs"), show_default=True,
              help=_for("clamp_inputs", "Clip x+δ to [0,1] while training the generator, as the stored bytes will "
                                        "be (--no-clamp: the paper's unclipped x+δ)."))
@click.option("--surrogate-restart/--no-surrogate-restart", "surrogate_restart", default=_default("surrogate_restart"),
              show_default=True,
              help=_for("surrogate_restart", "EM base: a freshly initialised surrogate before each surrogate pass, so "
                                             "the generator fits what a new model learns first."))
@click.option("--surrogate-steps", type=int, default=_default("surrogate_steps"), show_default=True,
              help=_for("surrogate_steps", "EM surrogate mini-batches per outer iteration (mtlue: --base em; "
                                                 "0 = one pass over the iteration's samples)."))
@click.option("--objective", type=click.Choice(["total", "dgba"]), default=_default("objective"), show_default=True,
              help=_for("objective", "How per-task losses combine."))
@click.option("--steps", type=int, default=_default("steps"),
              help=_for("steps", "PGD steps [default: as published: em 20, tap 250, sep 30]."))
@click.option("--fusion", type=click.Choice(["average", "patch"]), default=_default("fusion"), show_default=True,
              help=_for("fusion", "How K task patterns combine."))
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=_default("norm"),
              help=_for("norm", "Budget norm [default: l2 as the LSP/AR papers, then clipped to ε]."))
@click.option("--device", default="auto", show_default=True, help="auto · cpu · cuda · cuda:N.")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False),
              help="Generator/surrogate checkpoints (default: STORE.work/ beside the store).")
@click.option("--shard-size", type=int, default=2048, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing store at STORE.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.pass_context
@reports_errors
def protect(ctx, source, store, surrogate_backbone, surrogate_epochs, protect_tasks, device, shard_size, overwrite,
            quiet, **options):
    """Make the train split of SOURCE unlearnable and write it as a store at STORE.

    Trains (or loads) the perturbation generator, then writes round(clip(x·255 + δ·255, 0, 255))
    for every train sample. Resumable: rerun the same command after a kill.
    """
    from click.core import ParameterSource

    from mtlue.data import open_source
    from mtlue.errors import ConfigError
    from mtlue.protect import protect_config, surrogate_methods
    from mtlue.protect.driver import protect_source
    from mtlue.runtime import resolve_device

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)

    method = options["method"]
    for name in ("surrogate_backbone", "surrogate_epochs"):
        if given(name) and method not in surrogate_methods():
            raise ConfigError(f"--{name.replace('_', '-')} applies to --method {', '.join(surrogate_methods())}, "
                              f"not {method}")
    if protect_tasks:
        options["protect_tasks"] = tuple(t.strip() for t in protect_tasks.split(",") if t.strip())
    options["surrogate"] = SurrogateConfig(backbone=surrogate_backbone, epochs=surrogate_epochs)
    if options.get("robust") is not None:
        from mtlue.protect.robust import parse_robust

        options["robust"] = parse_robust(options["robust"])
    config = protect_config(options, explicit={name for name in options if name in ctx.params and given(name)})
    dist = _distributed(resolve_device(device))
    manifest = protect_source(open_source(source), store, config, dist.device, work_dir=config.work_dir,
                              overwrite=overwrite, progress=not quiet and dist.is_main, shard_size=shard_size,
                              dist=dist)
    if not dist.is_main:
        return
    record = manifest["protection"]
    count = manifest["splits"]["train"]["count"]
    click.echo(f"protected {count} train samples of {source} -> {store} "
               f"(method {record['method']}{'/' + record['base'] if record.get('base') else ''}, "
               f"ε {record['epsilon']:g}/255, poison rate {record['poison_rate']:g})")


# ---- attacks (attack) --------------------------------------------------------------------


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", metavar="DATA")
@click.option("--objective", default="total", show_default=True,
              help="single:TASK, total (sum of task losses), dgba (Σ_t ∇ℓ_t/ℓ_t per sample) or signsum (Σ_t sign ∇L_t).")
@click.option("--attack", "attack_name", type=click.Choice(["pgd", "fgsm", "apgd"]), default="pgd", show_default=True)
@click.option("--epsilon", type=float, default=8.0, show_default=True, help="L∞ budget in 1/255 units.")
@click.option("--alpha", type=float, default=2.0, show_default=True, help="PGD step size in 1/255 units.")
@click.option("--steps", type=int, default=25, show_default=True, help="Iterations (PGD, APGD).")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--limit", type=int, default=None, help="Attack only the first N test samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the PGD random start.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@reports_errors
def attack(model_path, data, objective, attack_name, epsilon, alpha, steps, batch_size, limit, seed, device, out_path,
           quiet):
    """Attack a trained MODEL on the test split of DATA; print clean vs adversarial metrics per task.

    MODEL is a checkpoint written by `mtlue train`; DATA a SOURCE spec or store. Reports per task the
    clean and adversarial accuracy (MAE for regression; for dense tasks mIoU, depth abs error and mean
    normal angle over all valid pixels, every dense metric in --out), the relative change and its mean
    over tasks.
    """

    from mtlue.attacks import build_attack
    from mtlue.attacks.evaluate import evaluate_attack, format_report
    from mtlue.jsonio import write_json
    from mtlue.data import open_source
    from mtlue.errors import ConfigError
    from mtlue.models import load_checkpoint
    from mtlue.runtime import resolve_device, seed_everything

    for option, value in (("--epsilon", epsilon), ("--alpha", alpha)):
        if value < 0:
            raise ConfigError(f"{option} {value:g}: must be >= 0 (1/255 units)")
    for option, value in (("--steps", steps), ("--batch-size", batch_size), ("--limit", limit)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} {value}: must be >= 1")
    torch_device = resolve_device(device)
    generator = seed_everything(seed)
    model, _ = load_checkpoint(model_path, torch_device)
    source = open_source(data)
    source.check_split("test")
    source_tasks = {t.name: t for t in source.tasks}
    for task in model.tasks:
        if source_tasks.get(task.name) != task:
            raise ConfigError(f"{model_path}: model task {task.name!r} ({task.kind}) is not a task of {data} "
                              f"(tasks: {', '.join(source_tasks)})")
    attacker = build_attack(attack_name, model, eps=epsilon / 255, alpha=alpha / 255, steps=steps,
                            objective=objective, generator=generator)

    def progress(done, total):
        if not quiet:
            click.echo(f"\r{attack_name} {objective}: {done}/{total}", nl=False, err=True)

    report = evaluate_attack(model, source, attacker, "test", batch_size, limit, torch_device, progress)
    if not quiet:
        click.echo("", err=True)
    report.update({"model": str(model_path), "data": data, "seed": seed})
    click.echo(format_report(report))
    if out_path:
        write_json(out_path, report)
        click.echo(f"wrote {out_path}")


# ---- verification and pipeline (verify, run) ----------------------------------------------


def _split_names(value: str) -> tuple:
    return tuple(v.strip() for v in value.split(",") if v.strip())


VERDICT_EXIT = {"PASS": 0, "FAIL": 3, "INCONCLUSIVE": 4}


def _verdict_exit(result) -> None:
    """Exit 0 on PASS, 3 on FAIL, 4 on INCONCLUSIVE (also when no row can be judged)."""
    outcome, _ = result.verdict_or_reason()
    sys.exit(VERDICT_EXIT[outcome.outcome] if outcome else VERDICT_EXIT["INCONCLUSIVE"])


def _jobs(value: str, dist) -> int:
    """--jobs: a count, or auto (one worker per CPU core on CPU; 1 on CUDA, and under torchrun, where
    each rank trains its own victims)."""
    if value == "auto":
        return max(1, os.cpu_count() or 1) if dist.device.type == "cpu" and not dist.distributed else 1
    try:
        jobs = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a positive integer or auto", param_hint="--jobs") from None
    if jobs < 1:
        raise click.BadParameter(f"{value!r}: a positive integer or auto", param_hint="--jobs")
    return jobs


_JOBS_HELP = "Victims trained at once, one worker process each (CPU only); auto = one per CPU core."


@main.command()
@click.argument("store")
@click.option("--clean", "clean_spec", required=True, help="SOURCE the store was protected from: its train split "
              "trains the clean reference victims, its test split evaluates every victim.")
@click.option("--profile", "profiles", multiple=True, metavar="NAME[:KEY=VALUE,...]",
              help="Attacker profile (repeatable): preset plain, augmented, sgd or long, or any name with "
                   "preset=…; keys are victim settings, e.g. sgd:backbone=resnet8,epochs=30,weightings=ew+uw. "
                   "[default: plain and sgd]")
@click.option("--weightings", default="ew,uw,rlw,aligned_mtl,fairgrad", show_default=True,
              help="Comma-separated task weightings of every profile that names none.")
@click.option("--stl", is_flag=True, help="Also verify single-task victims (one network per task) in every profile.")
@click.option("--seeds", default="0,1", show_default=True,
              help="Victim seeds of the no-defense rows; a row is judged at its worst seed.")
@click.option("--defenses", default="none", show_default=True,
              help="Comma-separated defenses, e.g. none,grayscale,jpeg10,bdr2,cutmix,ueraser_lite,at.")
@click.option("--defense-weightings", default=None, help="Weightings that get the defense rows [default: all].")
@click.option("--defense-profiles", default=None, help="Profiles that get the defense rows [default: the first].")
@click.option("--backbone", default="resnet18", show_default=True, help="Victim backbone (profiles may override).")
@click.option("--epochs", default=60, show_default=True, type=click.IntRange(min=1), help="Victim epochs.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-3, show_default=True, type=float)
@_victim_options
@click.option("--grad-space", type=click.Choice(["shared", "representation"]), default="shared", show_default=True,
              help="Gradients aligned_mtl/fairgrad combine; rows on representation gradients are labelled ~rep.")
@click.option("--max-learnability", default=0.2, show_default=True, type=float,
              help="PASS when every no-defense row, at its worst seed, retains at most this share of what clean "
                   "data teaches (0 = nothing beyond chance, 1 = as much as clean).")
@click.option("--min-clean-gain", default=0.1, show_default=True, type=float,
              help="INCONCLUSIVE when a clean victim's mean gain over chance is below this.")
@click.option("--binary-metric", type=click.Choice(BINARY_METRICS), default="balanced_accuracy", show_default=True,
              help="Metric binary tasks are judged on.")
@click.option("--jobs", default="auto", show_default=True, help=_JOBS_HELP)
@click.option("--out", "out_dir", default=None, help="Report directory [default: STORE.verify].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-check-store", "no_check_store", is_flag=True,
              help="Do not re-check a --clean store's shards (STORE itself is always verified: it is what is judged).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@reports_errors
def verify(store, clean_spec, profiles, weightings, stl, seeds, defenses, defense_weightings, defense_profiles,
           backbone, epochs, batch_size, lr, optimizer, momentum, schedule, augment, grad_space, max_learnability,
           min_clean_gain, binary_metric, jobs, out_dir, device, no_check_store, quiet):
    """Check that a protected release is unlearnable: retrain victims on STORE and on clean data.

    Every attacker profile x weighting is a verdict row, judged at its worst seed by retained
    learnability, (protected - chance) / (clean - chance) per task. Writes report.json, report.md
    and figures/*.png into OUT, prints the score table, and appends the summary to
    STORE/manifest.json. Exit 0 on PASS, 3 on FAIL, 4 on INCONCLUSIVE (the clean victims learned
    too little for the test to prove anything), 1 on an error.
    """
    from mtlue.data import open_source
    from mtlue.errors import ConfigError
    from mtlue.profiles import STL_ROW, build_profiles, check_weightings, parse_profile_spec
    from mtlue.report import format_verdict_text
    from mtlue.runtime import resolve_device
    from mtlue.store import update_manifest
    from mtlue.train import TrainConfig
    from mtlue.verdict import VerdictRules
    from mtlue.verify import VerifyConfig, run_verification, verification_summary

    dist = _distributed(resolve_device(device))
    torch_device = dist.device
    jobs = _jobs(jobs, dist)
    rules = VerdictRules(max_learnability=max_learnability, min_clean_gain=min_clean_gain, binary_metric=binary_metric)
    base = TrainConfig(backbone=backbone, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                       momentum=momentum, schedule=schedule, augment=augment, grad_space=grad_space,
                       binary_metric=binary_metric)
    names = check_weightings(_split_names(weightings), "--weightings") + ((STL_ROW,) if stl else ())
    tables = [parse_profile_spec(spec) for spec in profiles] or [{"name": "plain"}, {"name": "sgd"}]
    try:
        seed_list = tuple(int(s) for s in _split_names(seeds))
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: comma-separated integers") from None
    config = VerifyConfig(
        profiles=build_profiles(tables, base, names, "--profile"), seeds=seed_list, defenses=_split_names(defenses),
        defense_weightings=check_weightings(_split_names(defense_weightings), "--defense-weightings")
        if defense_weightings else None,
        defense_profiles=_split_names(defense_profiles) if defense_profiles else None, rules=rules)
    _check_stores(store)  # STORE is always checked: it is what is judged
    _check_stores(clean_spec, check=not no_check_store)
    protected, clean = open_source(store), open_source(clean_spec)
    out_dir = out_dir or os.path.normpath(store) + ".verify"
    result = run_verification(protected, clean, config, out_dir, torch_device, progress=not quiet and dist.is_main,
                              jobs=jobs, dist=dist)
    if not dist.is_main:
        return
    if getattr(protected, "store_dir", None):  # a release keeps its bytes: the summary is in OUT only
        update_manifest(store, "verification", verification_summary(result))
    click.echo(format_verdict_text(result))
    click.echo(f"report: {os.path.join(out_dir, 'report.md')}")
    _verdict_exit(result)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Run name [default: the recipe's name]; output in RUNS_DIR/NAME.")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an earlier run: stages whose fingerprint matches are skipped.")
@click.option("--fresh", is_flag=True, help="Delete an earlier run of this name and start over.")
@click.option("--jobs", default="auto", show_default=True, help=_JOBS_HELP)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-check-store", "no_check_store", is_flag=True, help=_NO_CHECK_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one recipe key for this run (repeatable), e.g. --set protect.base=tap; the value is "
                   "a TOML literal or a plain string.")
@reports_errors
def run(recipe, name, runs_dir, resume, fresh, jobs, device, no_check_store, quiet, overrides):
    """Protect a dataset and prove it, as a recipe (pipelines/*.toml) says.

    `--set protect.base=tap` changes one recipe key for this run (repeatable; the run is then named
    after the change, e.g. photos-base=tap, unless --name is given).

    Stages: surrogate, generator, shards, victims, report, into RUNS_DIR/NAME/. Exit 0 on
    verdict PASS, 3 on FAIL, 4 on INCONCLUSIVE, 1 on an error.
    """
    from mtlue.pipeline import run_pipeline
    from mtlue.recipe import load_recipe
    from mtlue.report import format_verdict_text
    from mtlue.runtime import resolve_device
    from mtlue.verdict import VerificationResult

    if resume and fresh:
        raise click.UsageError("--resume and --fresh exclude each other")
    dist = _distributed(resolve_device(device))
    torch_device = dist.device
    outcome = run_pipeline(load_recipe(recipe, name, overrides), runs_dir, device=torch_device, resume=resume, fresh=fresh,
                           progress=not quiet, log=lambda line: click.echo(line, err=True),
                           jobs=_jobs(jobs, dist),
                           check_store=not no_check_store, dist=dist)
    if not dist.is_main:
        return
    result = VerificationResult.from_json(outcome["report"])
    click.echo(format_verdict_text(result))
    click.echo(f"report: {os.path.join(outcome['report_dir'], 'report.md')}")
    _verdict_exit(result)


if __name__ == "__main__":
    main()
