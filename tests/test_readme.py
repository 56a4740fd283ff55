"""Every command shown in README.md and the docs guide exists as written: `mtlue` subcommands and their
options parse (nothing is run), and the scripts other commands name are in the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", ";", "|"}


def shell_blocks(path: Path) -> list[str]:
    """The bodies of the ```bash (and ```sh / ```console) blocks of a Markdown file."""
    return [body for language, body in FENCE.findall(path.read_text(encoding="utf-8"))
            if language in ("bash", "sh", "console")]


def commands(block: str) -> list[list[str]]:
    """Each simple command of a shell block as its words: continuation lines joined, comments dropped,
    `a && b` split in two."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words, current = shlex.split(line, comments=True), []
        for word in words + [";"]:
            if word in SEPARATORS:
                if current:
                    found.append(current)
                current = []
            else:
                current.append(word)
    return found


def mtlue_arguments(words: list[str]) -> list[str] | None:
    """The arguments after `mtlue`, `python -m mtlue` or `torchrun … -m mtlue`; None for other programs."""
    if words[0] == "mtlue":
        return words[1:]
    if words[0] in ("python", "torchrun"):
        for position in range(len(words) - 1):
            if words[position:position + 2] == ["-m", "mtlue"]:
                return words[position + 2:]
    return None


def shown_commands() -> list:
    cases = []
    for document in DOCUMENTS:
        for block in shell_blocks(document):
            for words in commands(block):
                cases.append(pytest.param(words, id=f"{document.relative_to(ROOT)}: {' '.join(words)[:70]}"))
    return cases


def project_extras() -> set:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as file:
        return set(tomllib.load(file)["project"]["optional-dependencies"])


def parse(group: click.Group, arguments: list[str]) -> None:
    """Parse `mtlue ARGUMENTS` as click would, without running the command. A path that click requires
    to exist is accepted when it does not: the docs name files the reader makes first."""
    name, rest = arguments[0], arguments[1:]
    command = group.commands.get(name)
    assert command is not None, f"mtlue has no command {name!r} (it has {', '.join(sorted(group.commands))})"
    try:
        command.make_context(name, list(rest))
    except click.BadParameter as error:
        wanted = getattr(error.param, "type", None)
        if not (isinstance(wanted, click.Path) and wanted.exists and "does not exist" in error.format_message()):
            raise


def test_the_documents_show_commands():
    shown = [case.values[0] for case in shown_commands()]
    assert ["mtlue", "run", "pipelines/digits.toml"] in shown  # the README's first command
    assert any(words[:2] == ["mtlue", "protect"] for words in shown)


@pytest.mark.parametrize("words", shown_commands())
def test_a_shown_command_exists_as_written(words):
    from cli import main as group

    arguments = mtlue_arguments(words)
    if arguments is not None:
        parse(group, arguments)
    elif words[0] == "python" and len(words) > 1 and words[1].endswith(".py"):
        assert (ROOT / words[1]).is_file(), f"{words[1]} is not in the repository"
    elif words[:2] == ["pip", "install"]:
        for extra in re.findall(r"\[([\w,-]+)\]", " ".join(words[2:])):
            for name in extra.split(","):
                assert name in project_extras(), f"pyproject.toml has no extra {name!r}"
    for word in words:
        if word.startswith("pipelines/") and word.endswith(".toml"):
            assert (ROOT / word).is_file(), f"{word} is not a shipped recipe"


def test_an_unknown_option_is_caught():
    from cli import main as group

    with pytest.raises(click.UsageError):
        parse(group, ["protect", "digits", "STORE", "--no-such-option"])
    with pytest.raises(AssertionError):
        parse(group, ["no-such-command"])
