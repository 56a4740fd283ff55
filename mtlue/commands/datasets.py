"""`mtlue datasets`: the sources mtlue reads and their tasks."""

from __future__ import annotations

import click

from mtlue.commands.options import reports_errors


@click.command()
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


command = datasets  # registered by cli.py
