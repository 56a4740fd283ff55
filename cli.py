"""The `mtlue` command line: the click group and the list of its commands.

Each command lives in its own module, mtlue/commands/<name>.py, which defines `command`;
registering a new one is adding its module name to COMMANDS. Library code raises typed errors
(mtlue.errors); mtlue.commands.options turns them into a one-line message and an exit status.
"""

from __future__ import annotations

import importlib

import click

COMMANDS = (
    "attack",
    "budget",
    "datasets",
    "export",
    "inspect",
    "protect",
    "release",
    "run",
    "train",
    "verify",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mtlue")
def main():
    """mtlue: make a multi-task image dataset unlearnable (MTL-UE) and prove it.

    SOURCE strings: digits · shapes[:n=…,size=…,seed=…] · scenes[:n=…,size=…,seed=…,mixed=…] ·
    folder:PATH · celeba:PATH · utkface:PATH · chestxray14:PATH · nyuv2:PATH · a path to an
    mtlue store · a path to a release
    (written by `mtlue release`).
    """


for _name in COMMANDS:
    main.add_command(importlib.import_module(f"mtlue.commands.{_name}").command, _name)


if __name__ == "__main__":
    main()
