"""`mtlue attack`: clean against adversarial metrics of a trained model."""

from __future__ import annotations

import click

from mtlue.attacks import ATTACKS  # the registry (light: names only)
from mtlue.commands.options import reports_errors


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", metavar="DATA")
@click.option("--objective", default="total", show_default=True,
              help="single:TASK, total (sum of task losses), dgba (Σ_t ∇ℓ_t/ℓ_t per sample) or signsum (Σ_t sign ∇L_t).")
@click.option("--attack", "attack_name", type=click.Choice(list(ATTACKS)), default="pgd", show_default=True)
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


command = attack  # registered by cli.py
