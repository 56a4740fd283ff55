"""`mtlue verify`: victims retrained on a protected store and on clean data; the verdict."""

from __future__ import annotations

import os

import click

from mtlue.commands.options import (BINARY_METRICS, JOBS_HELP, check_stores, distributed, jobs_count, reports_errors,
                                    split_names, verdict_exit, victim_options)
from mtlue.profiles import PRESETS  # light: the names and their descriptions
from mtlue.weighting import PAPER_WEIGHTINGS


@click.command()
@click.argument("store")
@click.option("--clean", "clean_spec", required=True, help="SOURCE the store was protected from: its train split "
              "trains the clean reference victims, its test split evaluates every victim.")
@click.option("--profile", "profiles", multiple=True, metavar="NAME[:KEY=VALUE,...]",
              help=f"Attacker profile (repeatable): preset {', '.join(list(PRESETS)[:-1])} or {list(PRESETS)[-1]}, or any name with "
                   "preset=…; keys are victim settings, e.g. sgd:backbone=resnet8,epochs=30,weightings=ew+uw. "
                   "[default: plain and sgd]")
@click.option("--weightings", default=",".join(PAPER_WEIGHTINGS), show_default=True,
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
@victim_options
@click.option("--grad-space", type=click.Choice(["shared", "representation"]), default="shared", show_default=True,
              help="Gradients aligned_mtl/fairgrad combine; rows on representation gradients are labelled ~rep.")
@click.option("--max-learnability", default=0.2, show_default=True, type=float,
              help="PASS when every no-defense row, at its worst seed, retains at most this share of what clean "
                   "data teaches (0 = nothing beyond chance, 1 = as much as clean).")
@click.option("--min-clean-gain", default=0.1, show_default=True, type=float,
              help="INCONCLUSIVE when a clean victim's mean gain over chance is below this.")
@click.option("--binary-metric", type=click.Choice(BINARY_METRICS), default="balanced_accuracy", show_default=True,
              help="Metric binary tasks are judged on.")
@click.option("--jobs", default="auto", show_default=True, help=JOBS_HELP)
@click.option("--out", "out_dir", default=None, help="Report directory [default: STORE.verify].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-check-store", "no_check_store", is_flag=True,
              help="Do not re-check a --clean store's shards (STORE itself is always verified: it is what is judged).")
@click.option("--no-diagnostics", "no_diagnostics", is_flag=True,
              help="Skip the release diagnostics (δ probe, intra-class variance, budget stored, one-epoch shortcut "
                   "speed: about two small_cnn epochs), which the report and manifest otherwise hold.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@reports_errors
def verify(store, clean_spec, profiles, weightings, stl, seeds, defenses, defense_weightings, defense_profiles,
           backbone, epochs, batch_size, lr, optimizer, momentum, schedule, augment, grad_space, max_learnability,
           min_clean_gain, binary_metric, jobs, out_dir, device, no_check_store, no_diagnostics, quiet):
    """Check that a protected release is unlearnable: retrain victims on STORE and on clean data.

    Every attacker profile x weighting is a verdict row, judged at its worst seed by retained
    learnability, (protected - chance) / (clean - chance) per task. Writes report.json, report.md
    and figures/*.png into OUT, prints the score table, and appends the summary to
    STORE/manifest.json. Exit 0 on PASS, 3 on FAIL, 4 on INCONCLUSIVE (the clean victims learned
    too little for the test to prove anything), 1 on an error.

    The verdict and its exit status are also written to OUT/verdict.status (e.g. "FAIL 3"). Under
    torchrun every process exits 0 on a verdict (torchrun reports any other status as a crash): read
    OUT/verdict.status; torchrun's own non-zero status then means an error.
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

    dist = distributed(resolve_device(device))
    torch_device = dist.device
    jobs = jobs_count(jobs, dist)
    rules = VerdictRules(max_learnability=max_learnability, min_clean_gain=min_clean_gain, binary_metric=binary_metric)
    base = TrainConfig(backbone=backbone, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                       momentum=momentum, schedule=schedule, augment=augment, grad_space=grad_space,
                       binary_metric=binary_metric)
    names = check_weightings(split_names(weightings), "--weightings") + ((STL_ROW,) if stl else ())
    tables = [parse_profile_spec(spec) for spec in profiles] or [{"name": "plain"}, {"name": "sgd"}]
    try:
        seed_list = tuple(int(s) for s in split_names(seeds))
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: comma-separated integers") from None
    config = VerifyConfig(
        profiles=build_profiles(tables, base, names, "--profile"), seeds=seed_list, defenses=split_names(defenses),
        defense_weightings=check_weightings(split_names(defense_weightings), "--defense-weightings")
        if defense_weightings else None,
        defense_profiles=split_names(defense_profiles) if defense_profiles else None, rules=rules)
    check_stores(store)  # STORE is always checked: it is what is judged
    check_stores(clean_spec, check=not no_check_store)
    protected, clean = open_source(store), open_source(clean_spec)
    out_dir = out_dir or os.path.normpath(store) + ".verify"
    result = run_verification(protected, clean, config, out_dir, torch_device, progress=not quiet and dist.is_main,
                              jobs=jobs, dist=dist, diagnostics=not no_diagnostics)
    if not dist.is_main:
        return
    if getattr(protected, "store_dir", None):  # a release keeps its bytes: the summary is in OUT only
        update_manifest(store, "verification", verification_summary(result))
    click.echo(format_verdict_text(result))
    print_diagnostics(result)
    click.echo(f"report: {os.path.join(out_dir, 'report.md')}")
    verdict_exit(result, out_dir)


def print_diagnostics(result) -> None:
    """The release diagnostics table, when the report holds one."""
    found = (result.notes or {}).get("diagnostics")
    if found and "skipped_reason" not in found:
        from mtlue.diagnostics import format_diagnostics

        click.echo("diagnostics (per task; see report.md):")
        click.echo(format_diagnostics(found))
    placed = (result.notes or {}).get("budget")
    if placed:
        from mtlue.budget import placement_line

        click.echo(placement_line(placed))


command = verify  # registered by cli.py
