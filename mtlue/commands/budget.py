"""`mtlue budget`: a recipe protected and verified at a list of ε; the curve and the smallest passing ε."""

from __future__ import annotations

import sys

import click

from mtlue.commands.options import JOBS_HELP, NO_CHECK_HELP, distributed, jobs_count, reports_errors, under_torchrun


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--epsilons", default=None, metavar="E1,E2,…",
              help="ε values in 1/255 units, e.g. 4,8,16,32 [default: the recipe's [budget] epsilons].")
@click.option("--name", default=None, help="Run name [default: the recipe's name]; output in RUNS_DIR/NAME/budget.")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--jobs", default="auto", show_default=True, help=JOBS_HELP)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-check-store", "no_check_store", is_flag=True, help=NO_CHECK_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one recipe key (repeatable), e.g. --set source=folder:photos; a TOML literal or a string.")
@reports_errors
def budget(recipe, epsilons, name, runs_dir, jobs, device, no_check_store, quiet, overrides):
    """Find the budget a dataset needs: run RECIPE at every ε and print the curve.

    The recipe runs as it is (RUNS_DIR/NAME, resumed when it finished before) and then once per other
    ε with only protect.epsilon changed (RUNS_DIR/NAME/budget/eps-E, reusing the clean victims). Prints,
    per ε, each attacker profile's worst retained learnability, the verdict and the image quality
    (PSNR, SSIM against the clean train images), then the smallest listed ε from which every larger
    listed ε passes. Writes budget.json, budget.md, curve.png and samples.png into RUNS_DIR/NAME/budget/.

    Exit 0 when some listed ε passes, 3 when none does, 1 on an error. Runs in one process (not under torchrun).
    """
    from mtlue.budget import budget_lines, run_budget
    from mtlue.errors import ConfigError
    from mtlue.pipeline import run_pipeline
    from mtlue.recipe import load_recipe, parse_epsilons
    from mtlue.runtime import resolve_device

    if under_torchrun():
        raise ConfigError("mtlue budget runs in one process: start it without torchrun")
    loaded = load_recipe(recipe, name, overrides)
    chosen = parse_epsilons(epsilons) if epsilons is not None else loaded.budget.get("epsilons")
    if not chosen:
        raise ConfigError(f"{recipe}: no ε to try: pass --epsilons 4,8,16 or set [budget] epsilons in the recipe")
    dist = distributed(resolve_device(device))
    log = (lambda line: click.echo(line, err=True))
    run_pipeline(loaded, runs_dir, device=dist.device, resume=True, progress=not quiet, log=log,
                 jobs=jobs_count(jobs, dist), check_store=not no_check_store)
    result = run_budget(loaded, chosen, runs_dir, device=dist.device, progress=not quiet, log=log,
                        jobs=jobs_count(jobs, dist), check_store=not no_check_store)
    for line in budget_lines(result):
        click.echo(line)
    sys.exit(0 if result["smallest_passing_epsilon"] is not None else 3)


command = budget  # registered by cli.py
