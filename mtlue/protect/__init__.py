"""Unlearnable-example methods and their registry (name -> "module:Class", imported on use).

mtlue: the MTL-UE generator over an EM/TAP/SEP base loss; em/tap/sep: per-sample PGD
baselines; lsp/ar: class-wise baselines.
"""

from __future__ import annotations

from mtlue.registry import load_registered


METHODS = {
    "mtlue": "mtlue.protect.mtlue_method:MTLUEMethod",
    "em": "mtlue.protect.em:EMMethod",
    "tap": "mtlue.protect.tap:TAPMethod",
    "sep": "mtlue.protect.sep:SEPMethod",
    "lsp": "mtlue.protect.lsp:LSPMethod",
    "ar": "mtlue.protect.ar:ARMethod",
}


def method_class(name: str):
    """The ProtectionMethod class registered under `name` (ConfigError if unknown)."""
    return load_registered(METHODS, name, "--method")


def build_method(config):
    """Instantiate the method `config.method` names."""
    return method_class(config.method)(config)


__all__ = ["METHODS", "method_class", "build_method"]
