"""`mtlue run RECIPE`: the five stages of a protection run, resumable, into `runs/<name>/`.

    surrogate  clean MTL surrogate + its checkpoints (TAP target, SEP ensemble)   runs/<name>/surrogate/
    generator  MTL-UE generator training (or a baseline's preparation)             runs/<name>/generator/
    shards     the protected train store (the release)                             runs/<name>/store/
    victims    weighting × {clean, protected} × defense victims                    runs/<name>/victims/
    report     report.json, report.md, figures/*.png, verdict                      runs/<name>/report/

Each stage's fingerprint covers its parameters, the identity of the data (the source spec and its
content digest: indices, labels and image identity) and the fingerprints upstream of it, so editing
a recipe, or pointing it at other data, re-runs exactly the stages it affects (mtlue.stages).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import asdict, dataclass

from mtlue.errors import ConfigError
from mtlue.recipe import DEFAULT_SEEDS, Recipe, build_config, check_value
from mtlue.weighting import PAPER_WEIGHTINGS
from mtlue.stages import Stage, fingerprint, read_json

STAGES = ("surrogate", "generator", "shards", "victims", "report")


@dataclass(frozen=True)
class RunPlan:
    """The configs of one run, built once from the recipe."""

    recipe: Recipe
    run_dir: str
    surrogate: object  # mtlue.train.TrainConfig
    protect: object  # mtlue.protect.config.ProtectConfig
    verify: object  # mtlue.verify.VerifyConfig

    @property
    def store_dir(self) -> str:
        return os.path.join(self.run_dir, "store")

    @property
    def surrogate_dir(self) -> str:
        return os.path.join(self.run_dir, "surrogate")

    @property
    def trains_surrogate(self) -> bool:
        """The surrogate stage trains a clean model only for a TAP/SEP base that was not handed one.
        EM trains its own surrogate with the generator; LSP/AR need none."""
        settings = self.protect.settings
        return settings.uses_clean_surrogate and not settings.surrogate_path


def plan_run(recipe: Recipe, runs_dir: str = "runs") -> RunPlan:
    """Turn recipe tables into configs; unknown keys raise ConfigError naming the table and key."""
    from mtlue.protect import protect_config
    from mtlue.protect.config import SurrogateConfig
    from mtlue.train import TrainConfig

    where = recipe.path
    surrogate_table = dict(recipe.surrogate)
    num_checkpoints = int(surrogate_table.pop("num_checkpoints", SurrogateConfig.num_checkpoints))
    surrogate = build_config(TrainConfig, surrogate_table, f"{where} [surrogate]", seed=recipe.seed)
    if not surrogate.checkpoint_every:
        surrogate = dataclasses.replace(surrogate, checkpoint_every=max(1, surrogate.epochs // num_checkpoints))
    surrogate_settings = SurrogateConfig(backbone=surrogate.backbone, epochs=surrogate.epochs,
                                         batch_size=surrogate.batch_size, lr=surrogate.lr,
                                         weight_decay=surrogate.weight_decay, num_checkpoints=num_checkpoints,
                                         checkpoint_every=surrogate.checkpoint_every, weighting=surrogate.weighting)
    # the recipe's seed and [surrogate] table win over [protect] keys of the same name
    protect = protect_config({**recipe.protect, "seed": recipe.seed, "surrogate": surrogate_settings},
                             explicit=recipe.protect, where=f"{where} [protect]")
    verify = plan_verification(recipe)
    return RunPlan(recipe=recipe, run_dir=os.path.join(runs_dir, recipe.name), surrogate=surrogate,
                   protect=protect, verify=verify)


def plan_verification(recipe: Recipe):
    """The [victims] and [verify] tables as a VerifyConfig: every profile, weighting, defense, seed and
    rule checked now, before any stage runs."""
    from mtlue.profiles import STL_ROW, build_profiles, check_weightings
    from mtlue.train import TrainConfig
    from mtlue.verdict import VerdictRules
    from mtlue.verify import VerifyConfig

    where = recipe.path
    table = recipe.victims
    rules = build_config(VerdictRules, recipe.verify, f"{where} [verify]")
    base = build_config(TrainConfig, recipe.victim_settings(), f"{where} [victims]", seed=recipe.seed,
                        binary_metric=rules.binary_metric)
    section = f"{where} [victims]"

    def grid(key: str, default):
        """A grid key's value, type-checked (a list unless `default` is a bool); None when absent."""
        value = table.get(key, default)
        return None if value is None else check_value(section, key, value, default if isinstance(default, bool) else ())

    weightings = check_weightings(grid("weightings", PAPER_WEIGHTINGS), f"{section} weightings")
    if grid("stl", False) and STL_ROW not in weightings:
        weightings = weightings + (STL_ROW,)
    profiles = table.get("profiles", [])
    if not isinstance(profiles, list) or not all(isinstance(p, dict) for p in profiles):
        raise ConfigError(f"{where}: [victims] profiles must be [[victims.profiles]] tables")
    profiles = build_profiles(profiles, base, weightings, section)
    defense_weightings = grid("defense_weightings", None)
    try:
        return VerifyConfig(
            profiles=profiles, seeds=grid("seeds", DEFAULT_SEEDS),
            defenses=grid("defenses", ("none",)), defense_profiles=grid("defense_profiles", None),
            defense_weightings=None if defense_weightings is None
            else check_weightings(defense_weightings, f"{section} defense_weightings"),
            rules=rules)
    except ConfigError as exc:
        raise ConfigError(f"{where} [victims]: {exc}") from None


def _stage_params(plan: RunPlan, data: dict) -> dict:
    """Parameters of each stage (what its fingerprint covers, besides upstream fingerprints).
    `data` is the source's identity (spec and content digest)."""
    protect = plan.protect.to_json()
    protect.pop("work_dir", None)
    return {
        "surrogate": {"data": data, "train": asdict(plan.surrogate) if plan.trains_surrogate else False},
        "generator": {"data": data, "protect": protect},
        "shards": {"shard_size": plan.recipe.shard_size},
        "victims": {"verify": plan.verify.to_json()},
        "report": {"rules": asdict(plan.verify.rules)},
    }


def source_identity(plan: RunPlan) -> dict:
    from mtlue.data import open_source

    return open_source(plan.recipe.source).identity()


def stage_fingerprints(plan: RunPlan, data: dict | None = None) -> dict:
    """Each stage's fingerprint; `data` (the source identity) is computed from the recipe when absent."""
    data = source_identity(plan) if data is None else data
    params, prints, upstream = _stage_params(plan, data), {}, ()
    for name in STAGES:
        prints[name] = fingerprint(params[name], upstream)
        upstream = upstream + (prints[name],)
    return prints


def check_run_dir(run_dir: str, resume: bool, fresh: bool) -> None:
    """Refuse to touch an existing run unless the user said --resume (continue) or --fresh (start over)."""
    if not os.path.isdir(run_dir) or not os.listdir(run_dir):
        return
    if fresh:
        shutil.rmtree(run_dir)
        return
    if not resume:
        raise ConfigError(f"{run_dir}: holds an earlier run; pass --resume to continue it (finished stages with "
                          f"matching fingerprints are skipped) or --fresh to start over")


def run_pipeline(recipe: Recipe, runs_dir: str = "runs", device=None, resume: bool = False, fresh: bool = False,
                 progress: bool = True, log=print, jobs: int = 1, check_store: bool = True, dist=None,
                 reuse_victims: tuple = ()) -> dict | None:
    """Run (or resume) every stage; returns {"verdict", "report_dir", "stages": {name: "ran"|"skipped"}}.

    `reuse_victims`: victims directories of other runs of the same data whose finished clean victims this
    run may reuse (linked in; each is still reused only when its fingerprint matches): the budget curve.

    Under torchrun (`dist`) every rank runs each stage together (data-parallel surrogate and generator,
    shards by id, victims spread over ranks); rank 0 alone decides, begins and finishes stages and
    writes the report; the other ranks return None."""
    from mtlue.data import open_source
    from mtlue.distributed import DistContext
    from mtlue.runtime import resolve_device

    plan = plan_run(recipe, runs_dir)
    device = resolve_device(device) if device is None or isinstance(device, str) else device
    dist = dist if dist is not None else DistContext.single(device)
    log = log if dist.is_main else (lambda line: None)
    progress = progress and dist.is_main
    if dist.is_main:
        check_run_dir(plan.run_dir, resume, fresh)
        os.makedirs(plan.run_dir, exist_ok=True)
    dist.barrier()
    source = open_source(recipe.source)
    data = source.identity()
    params, prints = _stage_params(plan, data), stage_fingerprints(plan, data)
    actions = {
        "surrogate": lambda stage: _surrogate_stage(plan, source, device, stage, progress, dist),
        "generator": lambda stage: _generator_stage(plan, source, device, stage, progress, dist),
        "shards": lambda stage: _shards_stage(plan, source, device, stage, progress, dist),
        "victims": lambda stage: _victims_stage(plan, source, device, stage, progress, jobs, check_store, dist,
                                                reuse_victims),
        "report": lambda stage: _report_stage(plan, source, device, stage) if dist.is_main else None,
    }
    outcome = {}
    for name in STAGES:
        stage = Stage(plan.run_dir, name, prints[name])
        if dist.broadcast_object(stage.is_done() if dist.is_main else None):
            log(f"[{name}] skipped: finished with the same fingerprint")
            outcome[name] = "skipped"
            continue
        log(f"[{name}] running")
        started = time.perf_counter()
        if dist.is_main:
            stage.begin(params[name])
        dist.barrier()
        summary = actions[name](stage)
        dist.barrier()
        if not dist.is_main:
            continue
        stage.finish(params[name], summary, time.perf_counter() - started)
        log(f"[{name}] done in {time.perf_counter() - started:.1f} s")
        outcome[name] = "ran"
    if not dist.is_main:
        return None
    report = read_json(os.path.join(plan.run_dir, "report", "report.json"))
    return {"verdict": report.get("verdict"), "report_dir": os.path.join(plan.run_dir, "report"), "stages": outcome,
            "report": report}


def _surrogate_stage(plan: RunPlan, source, device, stage: Stage, progress: bool, dist) -> dict:
    from mtlue.train import train_model

    if not plan.trains_surrogate:
        return {"trained": False}
    result = train_model(plan.surrogate, source.dataset("train"), source.dataset("test"), source.tasks, device,
                         out_dir=stage.path, progress=progress, dist=dist)
    return {"mean": result.history.get("mean")}


def _generator_config(plan: RunPlan, stage_dir: str):
    if not plan.trains_surrogate:  # the recipe's own surrogate_path, or none at all
        return plan.protect.with_(work_dir=stage_dir)
    return plan.protect.with_(work_dir=stage_dir).with_settings(surrogate_path=plan.surrogate_dir)


def _generator_stage(plan: RunPlan, source, device, stage: Stage, progress: bool, dist) -> dict:
    from mtlue.protect import build_method
    from mtlue.protect.base import ProtectContext
    from mtlue.protect.driver import prepare_method

    config = _generator_config(plan, stage.path)
    method = build_method(config)
    context = ProtectContext(source, config, device, stage.path, progress=progress, dist=dist)
    prepare_method(method, context, dist)
    return {"method": config.method, "settings": config.settings.to_json(), "record": method.record()}


def _shards_stage(plan: RunPlan, source, device, stage: Stage, progress: bool, dist) -> dict:
    from mtlue.protect.driver import protect_source

    config = _generator_config(plan, os.path.join(plan.run_dir, "generator"))
    manifest = protect_source(source, plan.store_dir, config, device, work_dir=config.work_dir,
                              overwrite=True, progress=progress, shard_size=plan.recipe.shard_size, dist=dist)
    # relative to the run directory: a run tree records no path of the machine it ran on (same run, same bytes)
    return {"store": os.path.relpath(plan.store_dir, plan.run_dir), "shards": len(manifest["splits"]["train"]["shards"])}


def _victims_stage(plan: RunPlan, source, device, stage: Stage, progress: bool, jobs: int, check_store: bool,
                   dist, reuse_victims: tuple = ()) -> dict:
    from mtlue.data import open_source
    from mtlue.store import verify_store
    from mtlue.verify import link_clean_victims, train_victim_grid

    for other in reuse_victims:
        link_clean_victims(other, stage.path)
    if check_store:  # a resumed run trains on a store that may have changed since the shards stage
        verify_store(plan.store_dir)
    rows = train_victim_grid(open_source(plan.store_dir), source, plan.verify, stage.path, device, progress, jobs,
                             dist)
    return {"victims": len(rows)}


def _report_stage(plan: RunPlan, source, device, stage: Stage) -> dict:
    from mtlue.data import open_source
    from mtlue.store import update_manifest
    from mtlue.verify import train_victim_grid, verification_summary, write_verification

    protected = open_source(plan.store_dir)
    # the victims stage finished every victim, so this only reads their metrics.json
    rows = train_victim_grid(protected, source, plan.verify, os.path.join(plan.run_dir, "victims"), device, False)
    result = write_verification(rows, protected, source, plan.verify, stage.path,
                                title=f"mtlue run {plan.recipe.name}", notes={"recipe": plan.recipe.path}, device=device)
    summary = verification_summary(result)
    update_manifest(plan.store_dir, "verification", summary)
    return {"verdict": summary["verdict"]}
