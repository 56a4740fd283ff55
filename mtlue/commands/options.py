"""What the commands share: the error -> exit status rule, the torchrun context, option helpers.

Exit statuses: 0 success (a verdict PASS), 1 an error (one line on stderr, never a traceback),
2 a usage error (click), 3 a verdict FAIL, 4 a verdict INCONCLUSIVE.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from mtlue.errors import IntegrityError, MtlueError

NO_CHECK_HELP = "Do not re-check store shards' sha256 against their manifests before training (faster; trusts the bytes)."
JOBS_HELP = "Victims trained at once, one worker process each (CPU only); auto = one per CPU core."
BINARY_METRICS = ("balanced_accuracy", "auc")  # mtlue.metrics.BINARY_METRICS (not imported: keeps --help light)


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


def distributed(device):
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


def check_stores(*specs, check: bool = True) -> None:
    """Verify every store or release among `specs` (sha256 of each file against its manifest or
    SHA256SUMS) before it is used."""
    from mtlue.data import parse_spec
    from mtlue.data.release import verify_release
    from mtlue.store import verify_store

    for spec in specs:
        kind = parse_spec(spec)[0] if check and spec else None
        if kind == "shards":
            verify_store(spec)
        elif kind == "release":
            verify_release(spec)


def victim_options(func):
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


def split_names(value: str) -> tuple:
    """A comma-separated option as a tuple of its non-empty, stripped items."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def jobs_count(value: str, dist) -> int:
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


VERDICT_EXIT = {"PASS": 0, "FAIL": 3, "INCONCLUSIVE": 4}
VERDICT_STATUS = "verdict.status"  # in the report directory: "<VERDICT> <exit status>", e.g. "FAIL 3"


def under_torchrun() -> bool:
    """Started by torchrun, which sets TORCHELASTIC_RUN_ID and RANK in every process it starts (also with
    --nproc-per-node 1)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "RANK" in os.environ


def verdict_exit(result, report_dir: str) -> None:
    """Leave with the verdict's status: 0 on PASS, 3 on FAIL, 4 on INCONCLUSIVE (also when no row can be
    judged), after writing it to REPORT_DIR/verdict.status.

    Under torchrun the process exits 0 on every verdict: torchrun reports a process that exits non-zero
    as a crash (a ChildFailedError traceback, torchrun's own status 1), so there the status file is the
    verdict's status and torchrun's non-zero status means an error."""
    from mtlue.store.layout import write_text_atomic

    outcome, _ = result.verdict_or_reason()
    name = outcome.outcome if outcome else "INCONCLUSIVE"
    status = VERDICT_EXIT[name]
    path = os.path.join(report_dir, VERDICT_STATUS)
    write_text_atomic(path, f"{name} {status}\n")
    if under_torchrun():
        if status:
            click.echo(f"verdict {name}: exit status {status} written to {path} (under torchrun every "
                       "process exits 0 on a verdict)", err=True)
        sys.exit(0)
    sys.exit(status)
