"""Protection settings: what every method shares (ProtectConfig) and each method's own frozen config.

ProtectConfig holds the method's name, the budget and the run's common settings, and `settings`: one
MethodConfig subclass per method holding only the fields that method reads. Options arrive flat (CLI
options, a recipe's [protect] table) and `mtlue.protect.protect_config` routes each to its config.
A field's metadata may name its option when that differs from the field (`option`: EM's `rounds`
is `--epochs`), its CLI flag (`flag`), and whether it changes what the method prepares (`resume`:
False for caps and inputs that are not optimised, left out of resume keys).
This module imports nothing heavy: the CLI reads its defaults for `--help`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar

from mtlue.errors import ConfigError

BASES = ("em", "tap", "sep")
OBJECTIVES = ("total", "dgba")
FUSIONS = ("average", "patch", "interleave")
NORMS = ("linf", "l2")
AUGMENTS = ("auto", "crop_flip", "crop", "none")
GENERATOR_STEMS = ("auto", "cifar", "imagenet")
CLAMP_GRADIENTS = ("straight_through", "zero")


def setting(default, option: str | None = None, flag: str | None = None, resume: bool = True):
    """A MethodConfig field: `option` is its key in the CLI and recipes (default: the field name),
    `flag` its CLI spelling (default: --option-with-dashes), `resume` whether it is in resume keys."""
    metadata = {"option": option, "flag": flag, "resume": resume}
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings are immutable: use a tuple")
    return field(default=default, metadata=metadata)


def option_flag(option: str) -> str:
    """The CLI spelling of an option key: --epochs, --surrogate (surrogate_path), --clamp/--no-clamp."""
    return OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


OPTION_FLAGS = {"surrogate_path": "--surrogate", "generator_path": "--generator", "clamp_inputs": "--clamp/--no-clamp"}


def check_choice(option: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{option_flag(option)} {value!r}: one of {', '.join(choices)}")


def check_at_least(option: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{option_flag(option)} {value}: must be >= {low}")


@dataclass(frozen=True)
class SurrogateConfig:
    """How the clean surrogate (TAP/SEP, and the baselines) is trained with `mtlue.train.train_model`."""

    backbone: str = "small_cnn"
    epochs: int = 6  # paper: 60 (ResNet-18); 6 small_cnn epochs keep a CPU run on digits at a minute
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    num_checkpoints: int = 15  # SEP ensemble size
    checkpoint_every: int = 0  # 0 = max(1, epochs // num_checkpoints)
    weighting: str = "ew"

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or max(1, self.epochs // self.num_checkpoints)


@dataclass(frozen=True)
class MethodConfig:
    """The settings one method reads; a subclass per method, validated in __post_init__."""

    uses_surrogate: ClassVar[bool] = True  # trains or loads a surrogate model (ProtectConfig.surrogate)

    @property
    def uses_clean_surrogate(self) -> bool:
        """Perturbs against a clean surrogate trained beforehand (TAP, SEP), handed by `surrogate_path`."""
        return False

    @property
    def budget_norm(self) -> str:
        """The norm of the budget δ is made within (every stored pixel stays within ε whatever it is)."""
        return "linf"

    @classmethod
    def options(cls) -> dict:
        """{option key: field name} of this config's fields."""
        return {f.metadata.get("option") or f.name: f.name for f in fields(cls)}

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def resume_settings(self) -> dict:
        """The fields that change what the method prepares (resume keys are built from them)."""
        outside = {f.name for f in fields(self) if f.metadata.get("resume") is False}
        return {k: v for k, v in self.to_json().items() if k not in outside}

    def with_(self, **changes) -> "MethodConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class MTLUEConfig(MethodConfig):
    """MTL-UE: the label-conditioned generator trained over an EM / TAP / SEP base loss.

    Defaults are the recipe measured to protect natural images and `digits` against attackers who train
    other architectures, with or without augmentation (EM base, 8 full passes, lr 2e-3, width 16, one
    pass of a freshly restarted surrogate per generator pass, EOT over the attacker's crop and, when
    every task is flip-safe, flip; README "Measured results"); the paper's scale is base
    tap, generator_width=64, epochs=100, lr 1e-3, augment crop_flip, surrogate ResNet-18 for 60 epochs.
    `milestones` are the generator MultiStepLR epochs, scaled to `epochs` when the cap is shorter.
    """

    base: str = setting("em")
    epochs: int = setting(8, resume=False)  # cap on outer iterations (paper: up to 100); a longer cap resumes
    lr: float = setting(2e-3)  # paper 1e-3 over up to 100 passes; doubled for 8
    weight_decay: float = setting(1e-4)
    milestones: tuple = setting((60, 80))
    gamma: float = setting(0.1)
    lambda_intra: float = setting(20.0)
    lambda_inter: float = setting(100.0)
    surrogate_path: str | None = setting(None)  # TAP/SEP base: a clean surrogate instead of training one
    generator_path: str | None = setting(None, resume=False)  # a trained generator: no training at all
    stop_error: float = setting(0.01)  # EM base: stop when poisoned-train error <= this
    # EM base: surrogate mini-batches per outer iteration; 0 = one pass over the iteration's samples (the
    # reference's 2 per pass leave a surrogate that learns δ too slowly for the shortcut to carry over)
    surrogate_steps: int = setting(0)
    # EM base: re-initialise the surrogate before each pass of surrogate training, so the generator
    # minimises the loss of a model that has seen the poisoned data once (what a new attacker learns first)
    surrogate_restart: bool = setting(True)
    generator_width: int = setting(16)  # stem channels of the generator (paper: 64; 16 keeps CPU runs at minutes)
    generator_stem: str = setting("auto")  # encoder stem: cifar (3x3) | imagenet (7x7/2 + maxpool) | auto (the source's)
    samples_per_epoch: int = setting(0)  # samples per outer iteration (0 = the whole split, as the paper)
    clamp_gradient: str = setting("straight_through")  # straight_through | zero (the reference code's)
    # EOT before the surrogate: auto (crop_flip when every task is flip-safe, else crop) | crop_flip (paper) | crop | none
    augment: str = setting("auto")
    clamp_inputs: bool = setting(True)  # clip x+δ to [0,1] in training as the stored bytes will be (the paper does not)
    # defenses in the generator's loop (EOT, mtlue.protect.robust): any of jpeg, bdr, gray, erase, at; () = none
    robust: tuple = setting(())

    def __post_init__(self):
        from mtlue.protect.robust import parse_robust

        object.__setattr__(self, "robust", parse_robust(self.robust))
        check_choice("base", self.base, BASES)
        check_choice("clamp_gradient", self.clamp_gradient, CLAMP_GRADIENTS)
        check_choice("generator_stem", self.generator_stem, GENERATOR_STEMS)
        check_choice("augment", self.augment, AUGMENTS)
        check_at_least("epochs", self.epochs, 1)
        check_at_least("surrogate_steps", self.surrogate_steps, 0)

    @property
    def uses_clean_surrogate(self) -> bool:
        return self.base in ("tap", "sep")

    def resume_settings(self) -> dict:
        """As MethodConfig's; `robust` only when set, so generators trained before it existed are reused."""
        settings = super().resume_settings()
        if not self.robust:
            settings.pop("robust")
        return settings

    def scaled_milestones(self) -> list[int]:
        """MultiStepLR milestones in outer iterations: paper's [60, 80] of 100, scaled to a shorter cap."""
        last = max(self.milestones) if self.milestones else 0
        if last < self.epochs:
            return [int(m) for m in self.milestones]
        scale = self.epochs / 100.0
        return sorted({max(1, int(round(m * scale))) for m in self.milestones})


@dataclass(frozen=True)
class SampleWiseConfig(MethodConfig):
    """A per-sample PGD baseline: steps and step size (None: the method's published ones), objective."""

    steps: int | None = setting(None)  # None: as published (em 20, tap 250, sep 30)
    step_size: float | None = setting(None)  # 1/255 units; None: as published
    objective: str = setting("total")  # how per-task losses combine: total | dgba

    def __post_init__(self):
        check_choice("objective", self.objective, OBJECTIVES)
        if self.steps is not None:
            check_at_least("steps", self.steps, 1)


@dataclass(frozen=True)
class EMConfig(SampleWiseConfig):
    """EM baseline: rounds of surrogate steps and a PGD pass, until the poisoned-train error is small."""

    rounds: int = setting(8, option="epochs", resume=False)  # cap on rounds; a longer cap resumes
    stop_error: float = setting(0.01)  # stop when the poisoned-train error <= this
    surrogate_steps: int = setting(10)  # surrogate mini-batches per round

    def __post_init__(self):
        super().__post_init__()
        check_at_least("epochs", self.rounds, 1)


@dataclass(frozen=True)
class TAPConfig(SampleWiseConfig):
    """TAP baseline: PGD against the fixed clean surrogate."""

    surrogate_path: str | None = setting(None)  # a clean surrogate instead of training one

    @property
    def uses_clean_surrogate(self) -> bool:
        return True


@dataclass(frozen=True)
class SEPConfig(SampleWiseConfig):
    """SEP baseline: PGD against the checkpoints of one clean surrogate run."""

    surrogate_path: str | None = setting(None)  # a directory of clean checkpoints instead of training them

    @property
    def uses_clean_surrogate(self) -> bool:
        return True


@dataclass(frozen=True)
class ClasswiseConfig(MethodConfig):
    """LSP / AR: one pattern per (task, class), fused over tasks and scaled to the budget."""

    uses_surrogate: ClassVar[bool] = False

    fusion: str = setting("average")  # how the K task patterns combine: average | patch | interleave
    norm: str | None = setting(None)  # linf | l2 (None: l2, the LSP/AR papers' budget)
    period: int = setting(8)  # interleave fusion (and texture tiles): the side of the repeated tile, in pixels

    def __post_init__(self):
        check_choice("fusion", self.fusion, FUSIONS)
        if self.norm is not None:
            check_choice("norm", self.norm, NORMS)
        check_at_least("period", self.period, 1)

    @property
    def pattern_norm(self) -> str:
        """The class-wise budget in force: --norm, else L2 as the LSP and AR papers use."""
        return self.norm or "l2"

    @property
    def budget_norm(self) -> str:
        return self.pattern_norm


@dataclass(frozen=True)
class ARConfig(ClasswiseConfig):
    """AR: ClasswiseConfig plus `fresh`: a fresh sample of the class's process per image (the AR paper)."""

    fresh: bool = setting(True)


@dataclass(frozen=True)
class TextureConfig(ClasswiseConfig):
    """texture: class-wise stationary ±ε tiles, each pixel of the tile owned by one task (interleave), L∞."""

    fusion: str = setting("interleave")
    norm: str | None = setting("linf")

    @property
    def pattern_norm(self) -> str:
        return self.norm or "linf"


@dataclass(frozen=True)
class ProtectConfig:
    """Everything a protection run needs; built once from the CLI or a recipe (`protect_config`).

    epsilon is in 1/255 units (8 → 8/255). `settings` is the method's own config (None: its
    defaults); `surrogate` is read only by methods that train or load a surrogate.
    """

    method: str = "texture"  # ties the MTL-UE generator against independent victims at 1/40 of the cost (results/lab-*.json)
    epsilon: float = 8.0
    batch_size: int = 128
    protect_tasks: tuple | None = None  # None = every task
    poison_rate: float = 1.0
    seed: int = 0
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    work_dir: str | None = None
    settings: MethodConfig | None = None

    def __post_init__(self):
        if self.method not in METHOD_SETTINGS:
            raise ConfigError(f"--method {self.method!r}: unknown (known: {', '.join(METHOD_SETTINGS)})")
        expected = METHOD_SETTINGS[self.method]
        if self.settings is None:
            object.__setattr__(self, "settings", expected())
        elif type(self.settings) is not expected:
            raise ConfigError(f"--method {self.method}: its settings are {expected.__name__}, "
                              f"not {type(self.settings).__name__}")
        if not 0 < self.epsilon <= 255:
            raise ConfigError(f"--epsilon {self.epsilon}: must be in (0, 255] (1/255 units)")
        if not 0.0 <= self.poison_rate <= 1.0:
            raise ConfigError(f"--poison-rate {self.poison_rate}: must be in [0, 1]")
        check_at_least("batch_size", self.batch_size, 1)

    @property
    def eps(self) -> float:
        """ε as a fraction of the [0, 1] pixel range."""
        return self.epsilon / 255.0

    def common_json(self) -> dict:
        """The shared settings, without the method's (`surrogate` only for a method that uses one)."""
        d = {"method": self.method, "epsilon": self.epsilon, "batch_size": self.batch_size,
             "protect_tasks": list(self.protect_tasks) if self.protect_tasks is not None else None,
             "poison_rate": self.poison_rate, "seed": self.seed}
        if self.settings.uses_surrogate:
            d["surrogate"] = asdict(self.surrogate)
        d["work_dir"] = self.work_dir
        return d

    def to_json(self) -> dict:
        """The shared settings and the method's, in one flat dict (their names never collide)."""
        return {**self.common_json(), **self.settings.to_json()}

    def resume_settings(self) -> dict:
        """Every setting the prepared state depends on: budget, batch size, tasks, seed, the surrogate
        (if used) and the method's resume settings; not the method name, poison rate or work dir."""
        common = {k: v for k, v in self.common_json().items() if k not in ("method", "poison_rate", "work_dir")}
        return {**common, **self.settings.resume_settings()}

    def with_(self, **changes) -> "ProtectConfig":
        return replace(self, **changes)

    def with_settings(self, **changes) -> "ProtectConfig":
        """This config with some of the method's settings changed."""
        return replace(self, settings=self.settings.with_(**changes))


# method name -> its settings class; mtlue.protect.METHODS pairs each with its ProtectionMethod class
METHOD_SETTINGS = {"mtlue": MTLUEConfig, "em": EMConfig, "tap": TAPConfig, "sep": SEPConfig, "lsp": ClasswiseConfig,
                   "ar": ARConfig, "texture": TextureConfig}
