"""The verdict: how much of what clean data teaches a victim survives the protection.

Per task, retained learnability = (protected − chance) / (clean − chance) on the clean test split
(for an error metric, (chance − protected) / (chance − clean)): 0 means the victim trained on the
release learned nothing beyond chance, 1 as much as from clean data. Chance and the metric follow
the task kind (`mtlue.metrics`): binary tasks are judged on balanced accuracy (or AUC), never plain
accuracy; dense tasks on mIoU (segmentation), abs error (depth) and mean angle (normals), against the
image-blind predictor fitted on the train labels at each pixel position (that pixel's majority class,
mean depth, mean normal: the label prior, spatial layout included; `mtlue.metrics.DenseChance`). A victim's score averages its tasks weighted by what clean data teaches each, the clean
gain (clean − chance; for errors, the fraction of the chance error removed), so a task clean data
barely teaches cannot dominate.

Victims are rows: attacker profile × weighting × defense × seed, each against the clean victim of
the same profile and weighting. A group (profile × weighting × defense) is judged at its worst seed.

- INCONCLUSIVE when a clean victim's mean clean gain is below `min_clean_gain`: a test that
  teaches nothing proves nothing.
- PASS when every no-defense group's worst-seed learnability ≤ `max_learnability`.
- FAIL otherwise. Defense groups are reported with the same rule and never change the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from mtlue.defenses import standard_defenses
from mtlue.errors import ConfigError
from mtlue.metrics import HIGHER_IS_BETTER

NO_DEFENSE = "none"
OUTCOMES = ("PASS", "FAIL", "INCONCLUSIVE")


@dataclass(frozen=True)
class VerdictRules:
    """Thresholds a recipe or `mtlue verify` sets."""

    max_learnability: float = 0.2
    min_clean_gain: float = 0.1
    binary_metric: str = "balanced_accuracy"

    def __post_init__(self):
        from mtlue.metrics import check_binary_metric

        check_binary_metric(self.binary_metric)
        for name in ("max_learnability", "min_clean_gain"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} = {value!r}: must be a number")
        if self.min_clean_gain < 0:
            raise ConfigError(f"min_clean_gain = {self.min_clean_gain}: must be >= 0")


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


@dataclass
class TaskScore:
    """One task of one victim pair, on the clean test split. Accuracy-type values are fractions in
    [0, 1]; `*_curve` are the per-epoch test values (the last one decides)."""

    task: str
    kind: str
    metric: str
    chance: float | None
    clean: float | None
    protected_last: float | None
    protected_peak: float | None = None  # best epoch, chosen on test data: reported, never judged
    clean_curve: list = field(default_factory=list)
    protected_curve: list = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    def _gain(self, value) -> float | None:
        value, chance = _finite(value), _finite(self.chance)
        if value is None or chance is None:
            return None
        if self.higher_is_better:
            return value - chance
        return (chance - value) / chance if chance > 0 else None

    @property
    def clean_gain(self) -> float | None:
        """What clean data teaches beyond chance (for errors: the fraction of the chance error removed)."""
        return self._gain(self.clean)

    @property
    def protected_gain(self) -> float | None:
        return self._gain(self.protected_last)

    @property
    def learnability(self) -> float | None:
        """Signed retained learnability; None when clean data teaches this task nothing."""
        clean, protected = self.clean_gain, self.protected_gain
        if clean is None or protected is None or clean <= 0:
            return None
        return protected / clean

    @property
    def weight(self) -> float:
        gain = self.clean_gain
        return gain if gain is not None and gain > 0 and self.learnability is not None else 0.0


@dataclass
class VictimRow:
    """One protected victim (profile × weighting × defense × seed) scored against its clean reference."""

    profile: str
    weighting: str
    defense: str = NO_DEFENSE
    seed: int = 0
    clean_seed: int = 0
    tasks: list = field(default_factory=list)  # list[TaskScore]
    delta_m: float | None = None  # % against the clean reference over every metric (mtlue.verify.last_delta_m)

    @property
    def key(self) -> tuple:
        return (self.profile, self.weighting, self.defense)

    @property
    def in_verdict(self) -> bool:
        return self.defense == NO_DEFENSE

    @property
    def learnability(self) -> float | None:
        """Tasks' learnability averaged with weights = clean gain; None when no task was learned clean."""
        total = sum(t.weight for t in self.tasks)
        if total <= 0:
            return None
        return sum(t.weight * t.learnability for t in self.tasks if t.weight > 0) / total

    @property
    def clean_gain(self) -> float | None:
        """Mean clean gain over the tasks: how far the clean reference cleared chance."""
        gains = [g for g in (t.clean_gain for t in self.tasks) if g is not None]
        return sum(gains) / len(gains) if gains else None

    def to_json(self) -> dict:
        row = asdict(self)
        row["learnability"] = self.learnability
        row["clean_gain"] = self.clean_gain
        for task_json, task in zip(row["tasks"], self.tasks):
            task_json.update(learnability=task.learnability, clean_gain=task.clean_gain, weight=task.weight)
        return row

    @classmethod
    def from_json(cls, d: dict) -> "VictimRow":
        names = set(TaskScore.__dataclass_fields__)
        tasks = [TaskScore(**{k: v for k, v in t.items() if k in names}) for t in d["tasks"]]
        return cls(d["profile"], d["weighting"], d.get("defense", NO_DEFENSE), int(d.get("seed", 0)),
                   int(d.get("clean_seed", 0)), tasks, d.get("delta_m"))


@dataclass
class Group:
    """The seeds of one profile × weighting × defense, judged at the worst (most learnable) seed."""

    profile: str
    weighting: str
    defense: str
    rows: list  # list[VictimRow]

    @property
    def in_verdict(self) -> bool:
        return self.defense == NO_DEFENSE

    @property
    def scores(self) -> list:
        return [r.learnability for r in self.rows]

    @property
    def worst(self) -> float | None:
        scores = self.scores
        return None if not scores or any(s is None for s in scores) else max(scores)

    @property
    def best(self) -> float | None:
        scores = self.scores
        return None if not scores or any(s is None for s in scores) else min(scores)

    def holds(self, rules: VerdictRules) -> bool | None:
        worst = self.worst
        return None if worst is None else worst <= rules.max_learnability

    def clean_learned(self, rules: VerdictRules) -> bool:
        gains = [r.clean_gain for r in self.rows]
        return all(g is not None and g >= rules.min_clean_gain for g in gains)


def group_rows(rows) -> list:
    """Rows grouped by (profile, weighting, defense), in first-seen order."""
    groups = {}
    for row in rows:
        groups.setdefault(row.key, Group(*row.key, rows=[])).rows.append(row)
    return list(groups.values())


@dataclass
class Verdict:
    outcome: str  # PASS | FAIL | INCONCLUSIVE
    reason: str


def judge(rows, rules: VerdictRules) -> Verdict:
    """The verdict over victim rows (module docstring). Raises ConfigError when no row can be judged."""
    groups = [g for g in group_rows(rows) if g.in_verdict]
    if not groups:
        raise ConfigError("verdict: no victim trained without a defense to judge")
    unlearned = [g for g in groups if not g.clean_learned(rules)]
    if unlearned:
        names = ", ".join(f"{g.profile}/{g.weighting}" for g in unlearned)
        return Verdict("INCONCLUSIVE", f"the clean victim of {names} did not clear chance by "
                                       f"{rules.min_clean_gain:g} (mean clean gain over tasks); lengthen training "
                                       f"or check the data")
    failing = [g for g in groups if not g.holds(rules)]
    if failing:
        worst = max(failing, key=lambda g: -math.inf if g.worst is None else g.worst)
        return Verdict("FAIL", f"{len(failing)} of {len(groups)} no-defense victim groups retain more than "
                               f"{rules.max_learnability:g} of what clean data teaches (worst "
                               f"{worst.profile}/{worst.weighting}: {_fmt(worst.worst)})")
    return Verdict("PASS", f"every no-defense victim group ({len(groups)}), at its worst seed, retains at most "
                           f"{rules.max_learnability:g} of what clean data teaches")


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


DEFENSES_KNOWN = standard_defenses()  # the defense registry's, each at its default
REPRODUCIBILITY = (
    "Bit-reproducible on the same machine and software: the same seed gives the same shards and the same "
    "victim metrics (CPU, same thread count; CUDA only with deterministic kernels). Not across machines: "
    "floating-point kernels (CPU instruction set, BLAS, thread count, GPU model) change victim training "
    "by amounts of the order of the seed spread shown per row, which is why the worst seed decides.")


@dataclass
class VerificationResult:
    """Everything a report shows: the victim rows, the rules, the grid that was run and its context."""

    rows: list  # list[VictimRow]
    rules: VerdictRules = field(default_factory=VerdictRules)
    title: str = "mtlue verification"
    dataset: str = ""
    method: str = ""
    grid: dict = field(default_factory=dict)  # VerifyConfig.to_json()
    profiles: dict = field(default_factory=dict)  # profile name -> one-line description
    surrogate_backbone: str | None = None
    notes: dict = field(default_factory=dict)

    def verdict(self) -> Verdict:
        return judge(self.rows, self.rules)

    def verdict_or_reason(self) -> tuple:
        """(Verdict, None), or (None, why) when the rows cannot be judged."""
        try:
            return self.verdict(), None
        except ConfigError as exc:
            return None, str(exc)

    def groups(self) -> list:
        return group_rows(self.rows)

    def not_run(self) -> list:
        """One line for every part of the standard grid this verification did not test."""
        from mtlue.weighting import PAPER_WEIGHTINGS

        lines = []
        profiles = self.grid.get("profiles", [])
        for profile in profiles:
            missing = [w for w in PAPER_WEIGHTINGS if w not in profile["weightings"]]
            if missing:
                lines.append(f"profile {profile['name']}: weighting(s) {', '.join(missing)} not run")
        if not any("stl" in p["weightings"] for p in profiles):
            lines.append("single-task (stl) victims: not run")
        victims = [p["victim"] for p in profiles]
        if victims and not any(v["augment"] != "none" for v in victims):
            lines.append("no attacker profile with standard augmentation")
        if victims and not any(v["optimizer"] == "sgd" for v in victims):
            lines.append("no attacker profile trained with SGD")
        if self.surrogate_backbone and victims and all(v["backbone"] == self.surrogate_backbone for v in victims):
            lines.append(f"no attacker profile with a backbone other than the surrogate's ({self.surrogate_backbone})")
        if victims and max(v["epochs"] for v in victims) < 2 * min(v["epochs"] for v in victims):
            lines.append("no attacker profile trained for twice the epochs")
        seeds = self.grid.get("seeds", [])
        if len(seeds) < 2:
            lines.append("one victim seed only: the seed spread of the no-defense rows is unknown")
        run = [d for d in self.grid.get("defenses", []) if d != NO_DEFENSE]
        for defense in DEFENSES_KNOWN:
            if defense not in run:
                lines.append(f"defense {defense}: not run")
        if run:
            defended = self.grid.get("defense_profiles", [])
            weightings = self.grid.get("defense_weightings")
            lines.append(f"defense rows ({', '.join(run)}): run for profile(s) {', '.join(defended)}"
                         f"{'' if weightings is None else ' × weighting(s) ' + ', '.join(weightings)} at seed "
                         f"{seeds[0] if seeds else 0} only; other profiles and weightings were not tested under a defense")
        return lines

    def to_json(self) -> dict:
        from mtlue.jsonio import json_safe

        outcome, reason = self.verdict_or_reason()
        groups = [{"profile": g.profile, "weighting": g.weighting, "defense": g.defense,
                   "seeds": [r.seed for r in g.rows], "learnability": g.scores, "worst": g.worst, "best": g.best,
                   "holds": g.holds(self.rules), "in_verdict": g.in_verdict} for g in self.groups()]
        return json_safe({
            "schema": SCHEMA, "title": self.title, "dataset": self.dataset, "method": self.method,
            "verdict": outcome.outcome if outcome else None,
            "verdict_reason": outcome.reason if outcome else reason,
            "rules": asdict(self.rules), "rule": RULE_TEXT.format(max=self.rules.max_learnability,
                                                                 gain=self.rules.min_clean_gain),
            "profiles": self.profiles, "surrogate_backbone": self.surrogate_backbone, "grid": self.grid,
            "groups": groups, "rows": [r.to_json() for r in self.rows], "not_run": self.not_run(),
            "reproducibility": REPRODUCIBILITY, "notes": self.notes,
        })

    @classmethod
    def from_json(cls, d: dict) -> "VerificationResult":
        if d.get("schema") != SCHEMA:
            raise ConfigError(f"report schema {d.get('schema')!r}: this mtlue reads {SCHEMA}")
        return cls(rows=[VictimRow.from_json(r) for r in d["rows"]], rules=VerdictRules(**d.get("rules", {})),
                   **{k: d[k] for k in ("title", "dataset", "method", "grid", "profiles", "surrogate_backbone", "notes")
                      if k in d})


SCHEMA = "mtlue-report/2"
RULE_TEXT = ("Per task, retained learnability = (protected - chance) / (clean - chance) on the clean test split, last "
             "epoch (binary tasks on balanced accuracy or AUC; dense tasks on mIoU, depth abs error and mean normal angle, "
             "chance being each pixel's train majority class, mean depth and mean normal; for an error, "
             "(chance - protected) / (chance - clean)); a victim averages its tasks weighted by clean - chance. "
             "PASS iff every no-defense profile x weighting, at its worst seed, is <= {max:g}; INCONCLUSIVE when a clean "
             "victim's mean gain over chance is below {gain:g}; defense rows are reported and do not change the verdict. "
             "A gradient weighting labelled ~rep combined representation gradients, not exact shared-parameter ones.")
