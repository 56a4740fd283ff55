"""`mtlue train`: one victim model trained on a source or store, tested on clean data."""

from __future__ import annotations

import click

from mtlue.commands.options import (BINARY_METRICS, NO_CHECK_HELP, check_stores, distributed, reports_errors,
                                    victim_options)
from mtlue.defenses import defense_names  # the registry (light: names only)
from mtlue.weighting import PAPER_WEIGHTINGS, WEIGHTINGS  # the registry (light: names only)


@click.command()
@click.argument("data")
@click.option("--test", "test_spec", default=None, metavar="SOURCE",
              help="Clean source whose 'test' split is evaluated (default: DATA's own test split; a protected store has none).")
@click.option("--weighting", default="ew", show_default=True,
              help=f"Task weighting: {', '.join(PAPER_WEIGHTINGS)} (paper), "
                   f"{', '.join(w for w in WEIGHTINGS if w not in PAPER_WEIGHTINGS)}.")
@click.option("--backbone", default="resnet18", show_default=True,
              help="resnet18, resnet50, vgg16_bn, densenet121, vit_b_16, small_cnn.")
@click.option("--epochs", default=60, show_default=True, type=int)
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Learning rate (weight decay 1e-4).")
@victim_options
@click.option("--binary-metric", type=click.Choice(BINARY_METRICS), default="balanced_accuracy", show_default=True,
              help="Metric of binary tasks (never plain accuracy: an imbalanced task looks learned at its majority class).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Output directory [default: runs/train-<weighting>].")
@click.option("--stl", is_flag=True, help="Single-task learning: one independent network per task.")
@click.option("--grad-space", type=click.Choice(["shared", "representation"]), default="shared", show_default=True,
              help="Gradients the gradient-based weightings combine: exact shared-parameter or representation.")
@click.option("--checkpoint-every", default=0, show_default=True, type=int, help="Also save DIR/checkpoints/epoch_K.pt every N epochs.")
@click.option("--defense", default="none", show_default=True,
              help=f"Training-time defense: {defense_names()}; at is PGD adversarial training.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
@click.option("--workers", default=0, show_default=True, type=int, help="DataLoader worker processes.")
@click.option("--no-check-store", "no_check_store", is_flag=True, help=NO_CHECK_HELP)
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
    check_stores(data, test_spec, check=not no_check_store)
    train_source = open_source(data)
    test_source = open_source(test_spec) if test_spec else train_source
    check_training_sources(train_source, test_source, data, f"--test {test_spec}" if test_spec else data)
    out_dir = out_dir or f"runs/train-{weighting}"
    floor_labels = {t.name: train_source.label_array("train", t.name) for t in train_source.tasks if not t.is_dense}
    hook = build_defense(defense, train_source.tasks, generator=torch.Generator().manual_seed(seed + 7))
    dist = distributed(torch_device)
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


command = train  # registered by cli.py
