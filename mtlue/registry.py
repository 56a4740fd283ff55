"""Lazy registries: a table maps a short name to "module:Class", imported on first use."""

from __future__ import annotations

import importlib

from mtlue.errors import ConfigError


def load_registered(table: dict, name: str, option: str, error=ConfigError):
    """The class `table[name]` names; `error` names the option and the known names when it is unknown."""
    if name not in table:
        raise error(f"{option} {name!r}: unknown (known: {', '.join(table)})")
    module_name, class_name = table[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise error(f"{option} {name!r}: its module {module_name} is not available in this install") from None
    return getattr(module, class_name)
