"""Unlearnable-example methods and their registry (name -> method class, imported on use, and its settings).

mtlue: the MTL-UE generator over an EM/TAP/SEP base loss; em/tap/sep: per-sample PGD
baselines; lsp/ar: class-wise baselines; texture: class-wise stationary tiles, one task per pixel.
"""

from __future__ import annotations

from typing import NamedTuple

from mtlue.errors import ConfigError
from mtlue.protect.config import METHOD_SETTINGS, ProtectConfig, option_flag
from mtlue.registry import load_registered


class Registered(NamedTuple):
    method: str  # "module:Class" of the ProtectionMethod
    settings: type  # its MethodConfig subclass


METHOD_CLASSES = {
    "mtlue": "mtlue.protect.mtlue_method:MTLUEMethod",
    "em": "mtlue.protect.em:EMMethod",
    "tap": "mtlue.protect.tap:TAPMethod",
    "sep": "mtlue.protect.sep:SEPMethod",
    "lsp": "mtlue.protect.lsp:LSPMethod",
    "ar": "mtlue.protect.ar:ARMethod",
    "texture": "mtlue.protect.texture:TextureMethod",
}
METHODS = {name: Registered(path, METHOD_SETTINGS[name]) for name, path in METHOD_CLASSES.items()}
# ProtectConfig fields a flat option dict may set for any method
COMMON_OPTIONS = ("method", "epsilon", "batch_size", "protect_tasks", "poison_rate", "seed", "surrogate", "work_dir")


def method_class(name: str):
    """The ProtectionMethod class registered under `name` (ConfigError if unknown)."""
    return load_registered({k: v.method for k, v in METHODS.items()}, name, "--method")


def settings_class(name: str) -> type:
    """The MethodConfig subclass of method `name` (ConfigError if unknown)."""
    if name not in METHODS:
        raise ConfigError(f"--method {name!r}: unknown (known: {', '.join(METHODS)})")
    return METHODS[name].settings


def build_method(config: ProtectConfig):
    """Instantiate the method `config.method` names."""
    return method_class(config.method)(config)


def applies_to(option: str) -> tuple:
    """The methods whose settings read `option` (a CLI / recipe key), in registry order."""
    return tuple(name for name, entry in METHODS.items() if option in entry.settings.options())


def surrogate_methods() -> tuple:
    """The methods that train or load a surrogate model (and so read ProtectConfig.surrogate)."""
    return tuple(name for name, entry in METHODS.items() if entry.settings.uses_surrogate)


def protect_config(options: dict, explicit=None, where: str | None = None) -> ProtectConfig:
    """The ProtectConfig of `options["method"]` from flat options (CLI options or a recipe's [protect] table).

    Each key is a common setting or an option of some method's settings (EM's `rounds` is `epochs`).
    A key the chosen method does not read is dropped when it is only a default and refused
    (ConfigError) when it is in `explicit` (default: every key), as is an unknown key or a wrong type.
    `where` names a recipe table in errors; without it errors name CLI options."""
    from mtlue.recipe import check_value

    explicit = set(options) if explicit is None else set(explicit)
    prefix = f"{where}: " if where else ""
    method = options.get("method", ProtectConfig.method)
    if not isinstance(method, str):
        raise ConfigError(f"{prefix}method = {method!r}: expected a string")
    settings_type = settings_class(method)
    known = set(COMMON_OPTIONS).union(*(entry.settings.options() for entry in METHODS.values()))
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"{prefix}unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    defaults = {**_defaults(settings_type), **_defaults(ProtectConfig)}
    own = settings_type.options()
    common, settings = {}, {}
    for key, value in options.items():
        name = key if where else option_flag(key)
        if value is None and key not in explicit:
            continue  # not given (a CLI option whose default differs by method): the method's own default
        if key not in COMMON_OPTIONS and key not in own:
            if key in explicit:
                raise ConfigError(f"{prefix}{name} applies to {'method ' if where else '--method '}"
                                  f"{', '.join(applies_to(key))}, not {method}")
            continue
        if key != "surrogate":
            value = check_value(where or "options", key, value, defaults[key])
        if key in COMMON_OPTIONS:
            common[key] = value
        else:
            settings[own[key]] = value
    try:
        return ProtectConfig(**common, settings=settings_type(**settings))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def _defaults(*classes) -> dict:
    """{option key: default} of dataclass fields (MethodConfig subclasses by option key)."""
    import dataclasses

    found = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            key = f.metadata.get("option") or f.name
            found[key] = None if f.default is dataclasses.MISSING else f.default
    return found


__all__ = ["METHODS", "COMMON_OPTIONS", "Registered", "method_class", "settings_class", "build_method", "applies_to",
           "surrogate_methods", "protect_config"]
