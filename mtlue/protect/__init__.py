"""Unlearnable-example methods and their registry (name -> "module:Class", imported on use).

mtlue: the MTL-UE generator over an EM/TAP/SEP base loss; em/tap/sep: per-sample PGD
baselines; lsp/ar: class-wise baselines.
"""

from __future__ import annotations

import importlib

from mtlue.errors import ConfigError

METHODS = {
    "mtlue": "mtlue.protect.mtlue_method:MTLUEMethod",
    "em": "mtlue.protect.em:EMMethod",
    "tap": "mtlue.protect.tap:TAPMethod",
    "sep": "mtlue.protect.sep:SEPMethod",
    "lsp": "mtlue.protect.lsp:LSPMethod",
    "ar": "mtlue.protect.ar:ARMethod",
}


def method_class(name: str):
    """The ProtectionMethod class registered under `name` (ConfigError if unknown or not installed)."""
    if name not in METHODS:
        raise ConfigError(f"--method {name!r}: unknown (known: {', '.join(METHODS)})")
    module_name, class_name = METHODS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"--method {name!r}: its module {module_name} is not available in this install") from None
        raise
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ConfigError(f"--method {name!r}: {module_name} defines no {class_name}") from None


def build_method(config):
    """Instantiate the method `config.method` names."""
    return method_class(config.method)(config)


__all__ = ["METHODS", "method_class", "build_method"]
