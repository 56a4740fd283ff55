"""`mtlue protect`: the train split of a source made unlearnable and written as a store."""

from __future__ import annotations

import click

from mtlue.commands.options import distributed, reports_errors
# protect's defaults are the configs' (a light module); the command passes on only the options given
from mtlue.protect.config import ProtectConfig, SurrogateConfig


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


@click.command()
@click.argument("source")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--method", default=ProtectConfig.method, show_default=True,
              help="mtlue (generator) · em · tap · sep (per-sample PGD baselines) · lsp · ar (class-wise baselines) · "
                   "texture (class-wise stationary tiles, one task per pixel). "
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
@click.option("--fusion", type=click.Choice(["average", "patch", "interleave"]), default=_default("fusion"),
              show_default=True,
              help=_for("fusion", "How K task patterns combine: average (sum / K), patch (a grid of task cells), "
                                  "interleave (each pixel of a repeated tile carries one task's pattern at full size)."))
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=_default("norm"),
              help=_for("norm", "Budget norm [default: lsp/ar l2 as their papers, then clipped to ε; texture linf]."))
@click.option("--period", type=click.IntRange(min=1), default=_default("period"), show_default=True,
              help=_for("period", "Side in pixels of the repeated tile of texture patterns and of interleave "
                                  "fusion's pixel ownership."))
@click.option("--fresh/--no-fresh", "fresh", default=_default("fresh"), show_default=True,
              help=_for("fresh", "A fresh sample of the class's AR process per image, as the AR paper "
                                 "(--no-fresh: one fixed sample per class)."))
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
    dist = distributed(resolve_device(device))
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


command = protect  # registered by cli.py
