"""Recipes: the TOML files in pipelines/ that name a dataset, a protection and its proof.

```toml
name = "digits"            # run directory runs/<name>/
source = "digits"          # any SOURCE spec string
seed = 0
[surrogate]                # clean surrogate: TrainConfig fields (backbone, epochs, batch_size, …)
[protect]                  # mtlue.protect.protect_config options: the common ones (method, epsilon, …) and
                           # those of the chosen method (mtlue: base, epochs, lambda_intra, …; lsp: fusion, …)
[store]                    # shard_size
[victims]                  # TrainConfig fields shared by every attacker profile, plus the grid:
                           # weightings, seeds, defenses, defense_weightings, defense_profiles, stl
[[victims.profiles]]       # one table per attacker profile: name, preset, weightings, TrainConfig fields
[verify]                   # max_learnability, min_clean_gain, binary_metric
[budget]                   # epsilons: `mtlue run` then also runs the recipe at each ε (mtlue.budget)
```
Every value is checked (key, type, known names) when the recipe is planned, before any work.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mtlue.errors import ConfigError

TOP_KEYS = {"name", "source", "seed", "description", "surrogate", "protect", "store", "victims", "verify", "budget"}
VICTIM_GRID_KEYS = {"weightings", "defenses", "defense_weightings", "defense_profiles", "profiles", "seeds", "stl"}
STORE_KEYS = {"shard_size"}
VERIFY_KEYS = {"max_learnability", "min_clean_gain", "binary_metric"}
BUDGET_KEYS = {"epsilons"}
SECTIONS = ("surrogate", "protect", "store", "victims", "verify", "budget")
DEFAULT_SEEDS = (0, 1)


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe; sections stay plain dicts until the pipeline builds configs from them."""

    path: str
    name: str
    source: str
    seed: int = 0
    description: str = ""
    surrogate: dict = field(default_factory=dict)
    protect: dict = field(default_factory=dict)
    store: dict = field(default_factory=dict)
    victims: dict = field(default_factory=dict)
    verify: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)

    @property
    def shard_size(self) -> int:
        return int(self.store.get("shard_size", 10000))

    def victim_settings(self) -> dict:
        """The [victims] keys that are TrainConfig fields (grid keys removed)."""
        return {k: v for k, v in self.victims.items() if k not in VICTIM_GRID_KEYS}


def _check_keys(path: str, section: str, table: dict, known: set) -> None:
    unknown = set(table) - known
    if "margin" in unknown and section == "verify":
        raise ConfigError(f"{path}: [verify] margin was replaced by max_learnability (retained learnability, "
                          f"0 = nothing learned, 1 = as much as from clean data; default 0.2)")
    if unknown:
        raise ConfigError(f"{path}: [{section}] unknown key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(known))})")


def parse_override(text: str) -> tuple[tuple[str, ...], object]:
    """`section.key=value` (or a top-level `key=value`) -> ((section, key), value); the value is read as a
    TOML literal (8, 0.5, true, ["ew", "uw"], "tap") and taken as a plain string when it is not one."""
    key, sep, raw = text.partition("=")
    parts = tuple(p.strip() for p in key.split("."))
    if not sep or not all(parts) or len(parts) > 2:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE or KEY=VALUE (e.g. protect.base=tap)")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(data: dict, overrides, path: str) -> dict:
    """The recipe's TOML with each `--set` applied (sections must exist or be known; keys are checked later)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        parts, value = parse_override(text)
        if len(parts) == 1:
            data[parts[0]] = value
            continue
        section, key = parts
        if section not in SECTIONS:
            raise ConfigError(f"--set {text!r}: no recipe section [{section}] ({', '.join(SECTIONS)})")
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        table[key] = value
    return data


def override_suffix(overrides) -> str:
    """`-base=tap` for `--set protect.base=tap`: the default run name of an overridden recipe."""
    return "".join("-" + re.sub(r"[^A-Za-z0-9_.=+-]+", "", text.partition("=")[0].split(".")[-1] + "="
                                + text.partition("=")[2].strip().strip('"')) for text in overrides)


def load_recipe(path: str, name: str | None = None, overrides=()) -> Recipe:
    """Read and check a recipe file (with `--set` overrides); errors name the file and the key at fault."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: recipe not found")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc})") from None
    data = apply_overrides(data, overrides, path)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(TOP_KEYS))})")
    if "source" not in data:
        raise ConfigError(f"{path}: missing required key 'source'")
    for key, kind in (("source", str), ("name", str), ("description", str), ("seed", int)):
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise ConfigError(f"{path}: {key} = {data[key]!r}: expected {'an integer' if kind is int else 'a string'}")
    sections = {}
    for section in SECTIONS:
        value = data.get(section, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        sections[section] = value
    _check_keys(path, "store", sections["store"], STORE_KEYS)
    _check_keys(path, "verify", sections["verify"], VERIFY_KEYS)
    _check_keys(path, "budget", sections["budget"], BUDGET_KEYS)
    if "epsilons" in sections["budget"]:
        try:
            sections["budget"] = {"epsilons": parse_epsilons(sections["budget"]["epsilons"])}
        except ConfigError as exc:
            raise ConfigError(f"{path}: [budget] {str(exc).replace('--epsilons ', 'epsilons = ')}") from None
    if "shard_size" in sections["store"]:
        check_value(f"{path} [store]", "shard_size", sections["store"]["shard_size"], 1)
        if sections["store"]["shard_size"] < 1:
            raise ConfigError(f"{path}: [store] shard_size = {sections['store']['shard_size']}: must be >= 1")
    run_name = name or (data.get("name") or os.path.splitext(os.path.basename(path))[0]) + override_suffix(overrides)
    return Recipe(path=path, name=str(run_name), source=str(data["source"]), seed=int(data.get("seed", 0)),
                  description=str(data.get("description", "")), **sections)


def parse_epsilons(values) -> tuple:
    """A list of ε in 1/255 units (a comma string or a list): positive, sorted, without repeats."""
    items = values.split(",") if isinstance(values, str) else values if isinstance(values, (list, tuple)) else [values]
    try:
        epsilons = sorted({float(v) for v in items if str(v).strip()})
    except (TypeError, ValueError):
        raise ConfigError(f"--epsilons {values!r}: expected numbers in 1/255 units, e.g. 4,8,16") from None
    if not epsilons or epsilons[0] <= 0:
        raise ConfigError(f"--epsilons {values!r}: expected one or more positive numbers (1/255 units)")
    return tuple(int(e) if float(e).is_integer() else e for e in epsilons)


def check_value(where: str, key: str, value, default):
    """`value` converted to the type of `default` (int, float, bool, str, tuple), or ConfigError naming the key."""
    def wrong(expected: str):
        return ConfigError(f"{where}: {key} = {value!r}: expected {expected}")

    if default is None:
        return tuple(value) if isinstance(value, list) else value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        return tuple(value)
    return value


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def build_config(cls, values: dict, where: str, **overrides):
    """Build a frozen config dataclass from a recipe table; unknown keys or wrong types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(fields))})")
    merged = dict(values)
    merged.update({k: v for k, v in overrides.items() if k in fields})
    for key, value in merged.items():
        default = _field_default(fields[key])
        if not dataclasses.is_dataclass(default):
            merged[key] = check_value(where, key, value, default)
    try:
        return cls(**merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
