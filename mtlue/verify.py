"""Verification: retrain victims on a protected release and on clean data, and judge the collapse.

The grid: every attacker profile (mtlue.profiles) × its weightings gets one clean reference victim
(clean train split, the first seed) and one protected victim per seed (the release); defense rows
add protected victims for the chosen profiles × weightings × defenses at the first seed. Every
victim is evaluated on the clean test split each epoch, and is its own fingerprinted stage under
`OUT/victims/`, so an interrupted verification resumes victim by victim; `jobs` trains several at
once in worker processes. The verdict rule is `mtlue.verdict`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from mtlue.data.base import Source, check_compatible_tasks
from mtlue.errors import ConfigError, MtlueError
from mtlue.metrics import best_value, delta_m, primary_metric
from mtlue.stages import Stage, fingerprint, read_json
from mtlue.verdict import NO_DEFENSE, TaskScore, VerdictRules, VictimRow


@dataclass(frozen=True)
class VictimSpec:
    """One victim to train: clean reference or protected, of one profile × weighting × defense × seed."""

    role: str  # clean | protected
    profile: str
    weighting: str
    defense: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.role}-{self.profile}-{self.weighting}-{self.defense}-s{self.seed}"


@dataclass(frozen=True)
class VerifyConfig:
    """The victim grid and the verdict rules."""

    profiles: tuple  # AttackerProfile, at least one
    seeds: tuple = (0, 1)  # protected no-defense victims; clean references and defense rows use seeds[0]
    defenses: tuple = (NO_DEFENSE,)
    defense_weightings: tuple | None = None  # weightings that get the defense rows (None: all)
    defense_profiles: tuple | None = None  # profiles that get the defense rows (None: the first)
    rules: VerdictRules = field(default_factory=VerdictRules)
    sample_count: int = 8

    def __post_init__(self):
        from mtlue.defenses import canonical_defense_name

        if not self.profiles:
            raise ConfigError("verify: name at least one attacker profile")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds {list(self.seeds)}: give one or more distinct victim seeds")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(f"seeds: {seed!r} is not an integer")
        defenses = tuple(dict.fromkeys(canonical_defense_name(d) for d in self.defenses))
        object.__setattr__(self, "defenses", defenses if NO_DEFENSE in defenses else (NO_DEFENSE,) + defenses)
        names = [p.name for p in self.profiles]
        for name in self.defense_profiles or ():
            if name not in names:
                raise ConfigError(f"defense_profiles: no profile {name!r} (profiles: {', '.join(names)})")

    def profile(self, name: str):
        return next(p for p in self.profiles if p.name == name)

    @property
    def defended_profiles(self) -> tuple:
        return tuple(self.defense_profiles) if self.defense_profiles is not None else (self.profiles[0].name,)

    def clean_victims(self) -> list:
        return [VictimSpec("clean", p.name, w, NO_DEFENSE, self.seeds[0]) for p in self.profiles for w in p.weightings]

    def protected_victims(self) -> list:
        victims = [VictimSpec("protected", p.name, w, NO_DEFENSE, s)
                   for p in self.profiles for w in p.weightings for s in self.seeds]
        for p in self.profiles:
            if p.name not in self.defended_profiles:
                continue
            for w in p.weightings:
                if self.defense_weightings is not None and w not in self.defense_weightings:
                    continue
                victims += [VictimSpec("protected", p.name, w, d, self.seeds[0]) for d in self.defenses if d != NO_DEFENSE]
        return victims

    def to_json(self) -> dict:
        return {"profiles": [p.to_json() for p in self.profiles], "seeds": list(self.seeds),
                "defenses": list(self.defenses), "defense_profiles": list(self.defended_profiles),
                "defense_weightings": None if self.defense_weightings is None else list(self.defense_weightings),
                "rules": asdict(self.rules)}


def data_identity(source: Source) -> dict:
    """What identifies a training or test set in a victim fingerprint: a store's shard checksums,
    otherwise the source's spec and content digest (indices, labels, image identity)."""
    manifest = getattr(source, "manifest", None)  # ShardSource: the store's parsed manifest
    if manifest:
        return {"store": [s.get("sha256") for split in manifest.get("splits", {}).values() for s in split.get("shards", [])]}
    return source.identity()


def _victim_config(config: VerifyConfig, victim: VictimSpec):
    train = config.profile(victim.profile).config_for(victim.weighting, victim.seed)
    return dataclasses.replace(train, defense=None if victim.defense == NO_DEFENSE else victim.defense)


def victim_params(config: VerifyConfig, victim: VictimSpec, train_data: Source, test_data: Source) -> dict:
    """Everything that decides a victim's metrics.json: its fingerprint covers exactly this."""
    train = asdict(_victim_config(config, victim))
    train.pop("binary_metric")  # every metric is recorded; the verdict picks one
    return {"train": train, "data": data_identity(train_data), "test": data_identity(test_data),
            "defense": victim.defense}


def finished_history(run_dir: str, victim: VictimSpec, params: dict) -> dict | None:
    """The victim's metrics.json when its stage finished with this fingerprint, else None."""
    stage = Stage(run_dir, victim.label, fingerprint(params))
    path = stage.file("metrics.json")
    return read_json(path) if stage.is_done() and os.path.isfile(path) else None


def train_victim(run_dir: str, victim: VictimSpec, params: dict, config: VerifyConfig, train_data: Source,
                 test_data: Source, device, progress: bool) -> dict:
    """Train (or reuse, when its fingerprint matches) one victim; returns its history (metrics.json)."""
    import torch

    from mtlue.defenses import build_defense
    from mtlue.train import train_model

    finished = finished_history(run_dir, victim, params)
    if finished is not None:
        return finished
    stage = Stage(run_dir, victim.label, fingerprint(params))
    train = _victim_config(config, victim)
    stage.begin(params)
    started = time.perf_counter()
    hook = build_defense(victim.defense, train_data.tasks, generator=torch.Generator().manual_seed(train.seed + 7))
    if progress:
        print(f"victim {victim.label}: training {train.epochs} epochs", flush=True)
    result = train_model(train, train_data.dataset("train"), test_data.dataset("test"), train_data.tasks, device,
                         out_dir=stage.path, defense=hook, progress=progress)
    stage.finish(params, {"mean": result.history.get("mean")}, time.perf_counter() - started)
    return read_json(stage.file("metrics.json"))  # as written (NaN as null), like a reused victim


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_clean_victims(from_victims: str, to_victims: str) -> int:
    """Hard-link (copy where links fail) every finished clean victim stage into another run's victims dir."""
    if not os.path.isdir(from_victims):
        return 0
    linked = 0
    for name in sorted(os.listdir(from_victims)):
        source_dir = os.path.join(from_victims, name)
        target_dir = os.path.join(to_victims, name)
        if not name.startswith("clean") or not os.path.isdir(source_dir) or os.path.exists(target_dir):
            continue
        os.makedirs(to_victims, exist_ok=True)
        shutil.copytree(source_dir, target_dir, copy_function=_link_or_copy)
        linked += 1
    return linked


def _train_in_worker(threads: int, *args) -> dict:
    import torch

    torch.set_num_threads(threads)
    return train_victim(*args)


def check_same_tasks(protected: Source, clean: Source) -> None:
    check_compatible_tasks(protected.tasks, clean.tasks, "the protected store", f"--clean {_spec(clean)}")


def _spec(source: Source) -> str:
    return getattr(source, "spec", None) or source.name


def check_unseen_test_split(protected: Source, clean: Source) -> None:
    """Refuse a test split that is not the held-out split of the source the store was made from."""
    # the layout (indices, labels, file names) survives copying the data; older stores record only the content
    made_from, given = protected.origin_layout(), clean.origin_layout()
    if made_from is None or given is None:
        made_from, given = protected.origin_content(), clean.origin_content()
    if made_from is not None and given is not None and made_from != given:
        recorded = ((getattr(protected, "manifest", None) or {}).get("source") or {}).get("spec")
        raise ConfigError(f"--clean {_spec(clean)}: not the source the store was made from ({recorded or 'unknown'}); "
                          f"its content digest differs, so its test split may overlap the protected train split. "
                          f"Pass the SOURCE the store was protected from, or the clean store exported from it")
    train_index = protected.index_array("train")
    test_index = clean.index_array("test")
    overlap = np.intersect1d(train_index, test_index)
    if len(overlap):
        raise ConfigError(f"--clean {_spec(clean)}: {len(overlap)} of its {len(test_index)} test samples have indices "
                          f"that are also in the protected train split (e.g. {overlap[:5].tolist()}); a verdict on "
                          f"seen samples proves nothing")


def check_victim_inputs(protected: Source, clean: Source) -> None:
    check_same_tasks(protected, clean)
    if "train" not in protected.splits():
        raise ConfigError(f"{_spec(protected)}: has no train split to train victims on")
    if "test" not in clean.splits():
        raise ConfigError(f"--clean {_spec(clean)}: has no test split to evaluate on")
    check_unseen_test_split(protected, clean)


def train_victim_grid(protected: Source, clean: Source, config: VerifyConfig, victims_dir: str, device,
                      progress: bool = True, jobs: int = 1, dist=None) -> list:
    """Train every clean reference and protected victim (each resumable); returns the VictimRows.

    Under torchrun (`dist`) the pending victims are spread over the ranks (victim i on rank
    i % world_size, each on its own device); after a barrier every rank reads all of them from disk."""
    check_victim_inputs(protected, clean)
    histories, pending = {}, []
    for victim in config.clean_victims() + config.protected_victims():
        train_data = clean if victim.role == "clean" else protected
        params = victim_params(config, victim, train_data, clean)
        finished = finished_history(victims_dir, victim, params)
        if finished is not None:
            histories[victim.label] = finished
        else:
            pending.append((victim, params, train_data))
    if dist is not None and dist.distributed:
        for position, (victim, params, train_data) in enumerate(pending):
            if position % dist.world_size == dist.rank:
                train_victim(victims_dir, victim, params, config, train_data, clean, device, progress)
        dist.barrier()
        for victim, params, _ in pending:
            histories[victim.label] = finished_history(victims_dir, victim, params)
            if histories[victim.label] is None:
                raise MtlueError(f"{victims_dir}: victim {victim.label} was not finished by its rank")
    elif jobs > 1 and len(pending) > 1 and getattr(device, "type", str(device)) == "cpu":
        import multiprocessing

        # Small CPU victims scale poorly over threads: one process per core trains more per second.
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {v.label: pool.submit(_train_in_worker, threads, victims_dir, v, p, config, d, clean, device, False)
                       for v, p, d in pending}
            for victim, _, _ in pending:
                histories[victim.label] = futures[victim.label].result()
                if progress:
                    print(f"victim {victim.label}: done", flush=True)
    else:
        for victim, params, train_data in pending:
            histories[victim.label] = train_victim(victims_dir, victim, params, config, train_data, clean, device,
                                                   progress)
    rows = []
    for victim in config.protected_victims():
        reference = VictimSpec("clean", victim.profile, victim.weighting, NO_DEFENSE, config.seeds[0])
        label = config.profile(victim.profile).row_label(victim.weighting)
        rows.append(VictimRow(victim.profile, label, victim.defense, victim.seed, reference.seed,
                              task_scores(protected.tasks, histories[reference.label], histories[victim.label],
                                          config.rules.binary_metric),
                              delta_m=last_delta_m(histories[reference.label], histories[victim.label])))
    return rows


def last_delta_m(clean_history: dict, protected_history: dict) -> float | None:
    """Δm (%, LibMTL's Δp over every metric of every task) of the protected victim's last epoch against
    its clean reference's; negative = the protected victim is worse."""
    value = delta_m(protected_history["epochs"][-1]["test"], clean_history["epochs"][-1]["test"])
    return None if np.isnan(value) else value


def _curve(history: dict, task: str, metric: str) -> list:
    return [epoch["test"][task].get(metric) for epoch in history["epochs"]]


def task_scores(tasks, clean_history: dict, protected_history: dict, binary_metric: str) -> list:
    """Per task: the judged metric's chance, clean and protected values and curves."""
    scores = []
    for task in tasks:
        metric = primary_metric(task, binary_metric)
        clean_curve = _curve(clean_history, task.name, metric)
        protected_curve = _curve(protected_history, task.name, metric)
        chance = (clean_history.get("chance") or {}).get(task.name, {}).get(metric)
        peak = best_value([np.nan if v is None else v for v in protected_curve], metric)
        scores.append(TaskScore(task.name, task.kind, metric, chance=chance, clean=clean_curve[-1],
                                protected_last=protected_curve[-1], protected_peak=None if np.isnan(peak) else peak,
                                clean_curve=clean_curve, protected_curve=protected_curve))
    return scores


def sample_grid(protected: Source, clean: Source, count: int, epsilon: float):
    """First `count` protected train images next to the clean images with the same global index."""
    from mtlue.report import SampleGrid

    count = min(count, protected.size("train"), clean.size("train"))
    if count == 0:
        return None
    stored = next(protected.batches("train", count, 0, count))
    original = next(clean.batches("train", count, 0, count))
    if not np.array_equal(stored.index, original.index):
        return None
    return SampleGrid(clean=original.images, protected=stored.images, epsilon=epsilon, indices=stored.index.tolist())


def release_diagnostics(protected: Source, clean: Source, record: dict, device=None) -> dict | None:
    """mtlue.diagnostics for a store made from `clean` (None when it holds no classification task or its
    train indices are not in the clean source, e.g. a store verified against another export)."""
    from mtlue.diagnostics import diagnose
    from mtlue.errors import SourceError

    if not any(t.kind in ("binary", "multiclass") for t in protected.tasks):
        return None
    try:
        return diagnose(protected, clean, float(record.get("epsilon", 8)), device=device)
    except SourceError as exc:
        return {"skipped_reason": str(exc)}


def write_verification(rows: list, protected: Source, clean: Source, config: VerifyConfig, out_dir: str,
                       title: str = "mtlue verification", notes: dict | None = None, diagnostics: bool = True,
                       device=None):
    """Build the VerificationResult from the rows and write report.json, report.md and figures (with the
    release diagnostics, mtlue.diagnostics, under notes["diagnostics"] unless `diagnostics` is False)."""
    from mtlue.report import VerificationResult, write_report

    record = (getattr(protected, "manifest", None) or {}).get("protection") or {}
    epsilon = float(record.get("epsilon", 8)) / 255.0
    notes = dict(notes or {})
    measured = (getattr(protected, "manifest", None) or {}).get("budget")
    if measured:  # where this store's ε falls on a measured budget curve (mtlue.budget)
        notes["budget"] = measured
    if diagnostics:
        found = release_diagnostics(protected, clean, record, device)
        if found is not None:
            notes["diagnostics"] = found
    result = VerificationResult(
        rows=rows, rules=config.rules, title=title, dataset=_spec(clean),
        method=" + ".join(str(record[k]) for k in ("method", "base") if record.get(k)) or "unknown",
        grid=config.to_json(),
        profiles={p.name: p.describe(protected.tasks, protected.image_shape) for p in config.profiles},
        surrogate_backbone=surrogate_backbone(record), notes={"protection": record, **notes})
    write_report(result, out_dir, samples=sample_grid(protected, clean, config.sample_count, epsilon))
    return result


def surrogate_backbone(record: dict) -> str | None:
    """The backbone the perturbation was optimised against, as the protection record names it."""
    surrogate = record.get("surrogate")
    if isinstance(surrogate, dict):
        return surrogate.get("backbone")
    return record.get("surrogate_backbone")


def run_verification(protected: Source, clean: Source, config: VerifyConfig, out_dir: str, device,
                     progress: bool = True, title: str = "mtlue verification", notes: dict | None = None,
                     jobs: int = 1, dist=None, diagnostics: bool = True):
    """Train the victim grid into OUT/victims and write the report into OUT; returns the result
    (under torchrun: rank 0 writes the report and returns it, the other ranks return None)."""
    from mtlue.defenses import check_defense_for

    for defense in config.defenses:  # refused before any victim trains, not when its row comes up
        check_defense_for(defense, protected.tasks)
    rows = train_victim_grid(protected, clean, config, os.path.join(out_dir, "victims"), device, progress, jobs, dist)
    if dist is not None and not dist.is_main:
        return None
    return write_verification(rows, protected, clean, config, out_dir, title, notes, diagnostics, device)


def verification_summary(result) -> dict:
    """The short form appended to the store's manifest."""
    outcome = result.verdict()
    return {
        "verdict": outcome.outcome, "reason": outcome.reason, "rules": asdict(result.rules),
        "profiles": result.profiles,
        "groups": [{"profile": g.profile, "weighting": g.weighting, "defense": g.defense, "seeds": [r.seed for r in g.rows],
                    "worst_learnability": g.worst, "best_learnability": g.best, "holds": g.holds(result.rules),
                    "in_verdict": g.in_verdict} for g in result.groups()],
        "not_run": result.not_run(),
        "diagnostics": (result.notes or {}).get("diagnostics"),
        "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
