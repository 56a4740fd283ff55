"""The `mtlue` command line: parses options, calls the library, prints results.

Library code raises typed errors (mtlue.errors); this module turns them into a
one-line message and a non-zero exit status.
"""

from __future__ import annotations

import functools
import sys

import click

from mtlue.errors import IntegrityError, MtlueError


def reports_errors(func):
    """Turn library errors into `error: …` on stderr and exit 1."""

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

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mtlue")
def main():
    """mtlue: make a multi-task image dataset unlearnable (MTL-UE) and prove it.

    SOURCE strings: digits · shapes[:n=…,size=…,seed=…] · folder:PATH · celeba:PATH ·
    utkface:PATH · chestxray14:PATH · a path to an mtlue store.
    """


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


if __name__ == "__main__":
    main()
