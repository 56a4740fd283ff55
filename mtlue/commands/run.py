"""`mtlue run`: a recipe's stages, protection to verdict, resumably."""

from __future__ import annotations

import os

import click

from mtlue.commands.verify import print_diagnostics
from mtlue.commands.options import JOBS_HELP, NO_CHECK_HELP, distributed, jobs_count, reports_errors, verdict_exit


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Run name [default: the recipe's name]; output in RUNS_DIR/NAME.")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an earlier run: stages whose fingerprint matches are skipped.")
@click.option("--fresh", is_flag=True, help="Delete an earlier run of this name and start over.")
@click.option("--jobs", default="auto", show_default=True, help=JOBS_HELP)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-check-store", "no_check_store", is_flag=True, help=NO_CHECK_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one recipe key for this run (repeatable), e.g. --set protect.base=tap; the value is "
                   "a TOML literal or a plain string.")
@reports_errors
def run(recipe, name, runs_dir, resume, fresh, jobs, device, no_check_store, quiet, overrides):
    """Protect a dataset and prove it, as a recipe (pipelines/*.toml) says.

    `--set protect.base=tap` changes one recipe key for this run (repeatable; the run is then named
    after the change, e.g. photos-base=tap, unless --name is given).

    Stages: surrogate, generator, shards, victims, report, into RUNS_DIR/NAME/. A recipe with a
    [budget] table then runs again at each of its epsilons (RUNS_DIR/NAME/budget/, as `mtlue budget`)
    and prints the curve and the smallest passing ε. Exit 0 on verdict PASS, 3 on FAIL, 4 on
    INCONCLUSIVE (the recipe's own ε decides), 1 on an error.

    The verdict and its exit status are also written to RUNS_DIR/NAME/report/verdict.status (e.g.
    "FAIL 3"). Under torchrun every process exits 0 on a verdict (torchrun reports any other status as
    a crash): read that file; torchrun's own non-zero status then means an error.
    """
    from mtlue.pipeline import run_pipeline
    from mtlue.recipe import load_recipe
    from mtlue.report import format_verdict_text
    from mtlue.runtime import resolve_device
    from mtlue.verdict import VerificationResult

    if resume and fresh:
        raise click.UsageError("--resume and --fresh exclude each other")
    dist = distributed(resolve_device(device))
    torch_device = dist.device
    loaded = load_recipe(recipe, name, overrides)
    outcome = run_pipeline(loaded, runs_dir, device=torch_device, resume=resume, fresh=fresh,
                           progress=not quiet, log=lambda line: click.echo(line, err=True),
                           jobs=jobs_count(jobs, dist),
                           check_store=not no_check_store, dist=dist)
    if not dist.is_main:
        return
    result = VerificationResult.from_json(outcome["report"])
    click.echo(format_verdict_text(result))
    print_diagnostics(result)
    click.echo(f"report: {os.path.join(outcome['report_dir'], 'report.md')}")
    if loaded.budget.get("epsilons") and not dist.distributed:
        from mtlue.budget import budget_lines, run_budget

        curve = run_budget(loaded, loaded.budget["epsilons"], runs_dir, device=torch_device, progress=not quiet,
                           log=lambda line: click.echo(line, err=True), jobs=jobs_count(jobs, dist),
                           check_store=not no_check_store)
        click.echo("budget: the recipe at each ε of [budget] epsilons")
        for line in budget_lines(curve):
            click.echo(line)
        click.echo(f"budget: {os.path.join(os.path.dirname(outcome['report_dir']), 'budget', 'budget.md')}")
    verdict_exit(result, outcome["report_dir"])


command = run  # registered by cli.py
