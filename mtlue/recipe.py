"""Recipes: the TOML files in pipelines/ that name a dataset, a protection and its proof.

```toml
name = "digits"            # run directory runs/<name>/
source = "digits"          # any SOURCE spec string
seed = 0
[surrogate]                # clean surrogate: TrainConfig fields (backbone, epochs, batch_size, …)
[protect]                  # ProtectConfig fields (method, base, epsilon, epochs, lambda_intra, …)
[store]                    # shard_size
[victims]                  # TrainConfig fields + weightings, defenses, defense_weightings, stl
[verify]                   # margin (accuracy points above the mean majority floor)
```
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mtlue.errors import ConfigError

PAPER_WEIGHTINGS = ("ew", "uw", "rlw", "aligned_mtl", "fairgrad")
TOP_KEYS = {"name", "source", "seed", "description", "surrogate", "protect", "store", "victims", "verify"}
VICTIM_GRID_KEYS = {"weightings", "defenses", "defense_weightings"}


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

    @property
    def weightings(self) -> tuple:
        return tuple(self.victims.get("weightings", PAPER_WEIGHTINGS))

    @property
    def defenses(self) -> tuple:
        return tuple(self.victims.get("defenses", ("none",)))

    @property
    def defense_weightings(self) -> tuple:
        return tuple(self.victims.get("defense_weightings", self.weightings))

    @property
    def margin(self) -> float:
        return float(self.verify.get("margin", 10.0))

    @property
    def shard_size(self) -> int:
        return int(self.store.get("shard_size", 10000))

    def victim_settings(self) -> dict:
        """The [victims] keys that are TrainConfig fields (grid keys removed)."""
        return {k: v for k, v in self.victims.items() if k not in VICTIM_GRID_KEYS}


def load_recipe(path: str, name: str | None = None) -> Recipe:
    """Read and check a recipe file; errors name the file and the key at fault."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: recipe not found")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("source",):
        if key not in data:
            raise ConfigError(f"{path}: missing required key {key!r}")
    sections = {}
    for section in ("surrogate", "protect", "store", "victims", "verify"):
        value = data.get(section, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        sections[section] = value
    run_name = name or data.get("name") or os.path.splitext(os.path.basename(path))[0]
    return Recipe(path=path, name=str(run_name), source=str(data["source"]), seed=int(data.get("seed", 0)),
                  description=str(data.get("description", "")), **sections)


def build_config(cls, values: dict, where: str, **overrides):
    """Build a frozen config dataclass from a recipe table; unknown keys raise ConfigError naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})")
    merged = dict(values)
    merged.update({k: v for k, v in overrides.items() if k in names})
    for key, value in merged.items():
        if isinstance(value, list):
            merged[key] = tuple(value)
    try:
        return cls(**merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
