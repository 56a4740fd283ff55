"""Fault injection: `mtlue export`, `protect` and `run`, killed with SIGKILL at seeded points, resume to the
same bytes an uninterrupted run writes.

Each command runs as a real subprocess of the CLI. An uninterrupted reference run measures when each
phase of the command starts and ends (export: the shards; protect: the generator, the shards; run: its
stages), by the paths that appear. A killed run waits for a phase to start, sleeps a seeded fraction of
that phase's length, and gets SIGKILL; the resumed run must then finish with the reference's
shard bytes (manifest sha256s and the files themselves), file list and, for `run`, report rows and verdict.
A kill that lands after the command finished is retried earlier, so every case interrupts at least once.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mtlue.store import verify_store

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cli"]
SPEC = "shapes:n=200,size=16,seed=1"
KILL_POINTS = {"export": 3, "protect": 2, "run": 2}  # each gets its own seeded delay
TIMEOUT_S = 120  # one command; the tiny inputs take seconds

RECIPE = """
name = "tiny"
source = "shapes:n=96,size=16,seed=3"
seed = 0
[surrogate]
backbone = "small_cnn"
epochs = 2
batch_size = 32
num_checkpoints = 2
[protect]
method = "mtlue"
base = "tap"
epochs = 2
batch_size = 32
generator_width = 8
[store]
shard_size = 16
[victims]
backbone = "small_cnn"
epochs = 1
batch_size = 32
weightings = ["ew"]
seeds = [0]
defenses = ["none"]
[verify]
max_learnability = 0.2
"""


@dataclass(frozen=True)
class Command:
    """One CLI command under test: how to start and resume it, what it writes, and its phases
    (name -> (path that appears when the phase starts, path that appears when it ends))."""

    name: str
    args: tuple  # relative paths, run in the case's own directory
    resume_args: tuple
    phases: dict
    store: str  # the store whose shards must come out identical
    report: str | None = None  # report.json whose rows and verdict must come out identical
    setup: object = None  # callable(case_dir): what is there before the command starts


def older_store(case_dir: Path) -> None:
    """Another export in S, for --overwrite to replace."""
    from mtlue.data import open_source
    from mtlue.store import export_source

    export_source(open_source("shapes:n=40,size=16,seed=2"), str(case_dir / "S"), shard_size=16, progress=False)


PROTECT_ARGS = ("protect", SPEC, "P", "--method", "mtlue", "--epochs", "2", "--batch-size", "16", "--generator-width", "8",
                "--samples-per-epoch", "64", "--shard-size", "16", "--device", "cpu", "--quiet")
RUN_ARGS = ("run", "tiny.toml", "--runs-dir", "R", "--device", "cpu", "--jobs", "1", "--quiet")
COMMANDS = {
    "export": Command("export", ("export", SPEC, "S", "--shard-size", "16", "--quiet"),
                      ("export", SPEC, "S", "--shard-size", "16", "--quiet", "--resume"),
                      phases={"shards": ("S", "S/manifest.json")}, store="S"),
    # a kill while the new store is staged beside the old one; the same command then replaces it
    "overwrite": Command("overwrite", ("export", SPEC, "S", "--shard-size", "16", "--quiet", "--overwrite"),
                         ("export", SPEC, "S", "--shard-size", "16", "--quiet", "--overwrite"),
                         phases={"staged": ("S.partial-*", "S.replaced-*")}, store="S", setup=older_store),
    # protect has no --resume: the same command continues from P.work/ and the finished shards
    "protect": Command("protect", PROTECT_ARGS, PROTECT_ARGS,
                       phases={"generator": ("P.work", "P"), "shards": ("P", "P/manifest.json")}, store="P"),
    "run": Command("run", RUN_ARGS, RUN_ARGS + ("--resume",),
                   phases={"surrogate": ("R/tiny/surrogate", "R/tiny/generator"),
                           "shards": ("R/tiny/shards", "R/tiny/victims"),
                           "victims": ("R/tiny/victims", "R/tiny/report")},
                   store="R/tiny/store", report="R/tiny/report/report.json"),
}
# (command, phase, how many seeded kill points in it): about 90 s on two cores; the shards stage of
# `run` is protect's, killed above
KILL_PLAN = (("export", "shards", 2), ("overwrite", "staged", 1), ("protect", "generator", 1), ("protect", "shards", 1),
             ("run", "surrogate", 1), ("run", "victims", 1))
KILL_POINTS = [(name, phase, k, count) for name, phase, count in KILL_PLAN for k in range(count)]
SEED = 12


def cli_env() -> dict:
    # one intra-op thread, as in conftest.py: the reference and every resumed run compute alike
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def prepare(case_dir: Path, command: Command) -> Path:
    case_dir.mkdir(parents=True, exist_ok=True)
    (case_dir / "tiny.toml").write_text(RECIPE)
    if command.setup is not None:
        command.setup(case_dir)
    return case_dir


def exists(case_dir: Path, path: str) -> bool:
    return any(case_dir.glob(path))


def start(command_args: tuple, case_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *command_args], cwd=case_dir, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, what: str) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"{what} did not finish in {TIMEOUT_S} s:\n{output}")
    return proc.returncode, output


def wait_for(path: Path, proc: subprocess.Popen) -> float:
    """Poll until `path` exists or `proc` ends; the monotonic time it appeared (or the process ended)."""
    while not exists(path.parent, path.name) and proc.poll() is None:
        time.sleep(0.005)
    return time.monotonic()


def expected_exit(command: Command, code: int, output: str) -> None:
    # `run` exits with its verdict: 0 PASS, 3 FAIL, 4 INCONCLUSIVE
    allowed = (0, 3, 4) if command.name == "run" else (0,)
    assert code in allowed, f"mtlue {command.name} exited {code}:\n{output}"


@dataclass
class Outcome:
    """What a finished run left: its exit status and the bytes to compare."""

    code: int
    files: list  # every path under the case directory that belongs to the outputs
    manifest_shards: dict  # split -> [(file, sha256), ...] from manifest.json
    shard_bytes: dict  # relative shard path -> sha256 of the file itself
    report: dict | None


def outcome(command: Command, case_dir: Path, code: int) -> Outcome:
    store = case_dir / command.store
    manifest = json.loads((store / "manifest.json").read_text())
    manifest_shards = {split: [(s["file"], s["sha256"]) for s in record["shards"]]
                       for split, record in manifest["splits"].items()}
    shard_bytes = {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(store.rglob("shard-*.h5"))}
    files = sorted(str(p.relative_to(case_dir)) for p in case_dir.rglob("*") if p.name != "tiny.toml")
    report = None
    if command.report:
        full = json.loads((case_dir / command.report).read_text())
        report = {"rows": full["rows"], "verdict": full["verdict"]}
    return Outcome(code, files, manifest_shards, shard_bytes, report)


def assert_same(resumed: Outcome, reference: Outcome, where: str) -> None:
    assert resumed.manifest_shards == reference.manifest_shards, f"{where}: manifest shard sha256s differ"
    assert resumed.shard_bytes == reference.shard_bytes, f"{where}: shard file bytes differ"
    assert resumed.files == reference.files, f"{where}: files differ (leftovers or missing)"
    assert resumed.report == reference.report, f"{where}: report rows/verdict differ"
    assert resumed.code == reference.code, f"{where}: exit status differs"


@dataclass(frozen=True)
class Reference:
    outcome: Outcome
    appeared: dict  # path -> seconds after the start at which it appeared


def watched_paths(command: Command) -> list:
    return sorted({path for phase in command.phases.values() for path in phase})


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """One uninterrupted run per command, made lazily and shared by its kill points."""
    made = {}

    def get(command: Command) -> Reference:
        if command.name not in made:
            case_dir = prepare(tmp_path_factory.mktemp(f"reference-{command.name}"), command)
            started = time.monotonic()
            proc = start(command.args, case_dir)
            appeared, pending = {}, watched_paths(command)
            while pending and proc.poll() is None:
                for path in [p for p in pending if exists(case_dir, p)]:
                    appeared[path] = time.monotonic() - started
                    pending.remove(path)
                time.sleep(0.002)
            code, output = finish(proc, f"reference mtlue {command.name}")
            expected_exit(command, code, output)
            assert not pending, f"reference mtlue {command.name}: {pending} never appeared"
            made[command.name] = Reference(outcome(command, case_dir, code), appeared)
        return made[command.name]

    return get


def kill_at(command: Command, case_dir: Path, marker: str, delay: float) -> tuple[bool, int]:
    """Start the command, SIGKILL it `delay` s after `marker` appears; (was it still running, exit status)."""
    proc = start(command.args, case_dir)
    wait_for(case_dir / marker, proc)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    code, output = finish(proc, f"killed mtlue {command.name}")
    if not alive:
        expected_exit(command, code, output)
    else:
        assert code == -signal.SIGKILL
    return alive, code


def check_killed_state(command: Command, case_dir: Path) -> None:
    """What a kill may leave: a store is either without manifest.json or complete and intact."""
    store = case_dir / command.store
    if (store / "manifest.json").is_file():
        verify_store(str(store))


def kill_fraction(name: str, phase: str, point: int, count: int) -> float:
    """A seeded kill point as a fraction of the phase; the `count` points of a phase are stratified,
    so they spread from its start to near its end."""
    rng = np.random.default_rng([SEED, list(COMMANDS).index(name), list(COMMANDS[name].phases).index(phase), point])
    lo, hi = 0.05 + 0.85 * point / count, 0.05 + 0.85 * (point + 1) / count
    return float(rng.uniform(lo, hi))


def finished_before_kill(command: Command, case_dir: Path) -> bool:
    """The kill found nothing left to do: the store (or, for `run`, the report stage) was complete,
    and no overwrite was under way beside it."""
    if command.report:
        stage = case_dir / Path(command.report).parent / "stage.json"
        return stage.is_file() and json.loads(stage.read_text()).get("status") == "done"
    staged = exists(case_dir, command.store + ".partial-*") or exists(case_dir, command.store + ".replaced-*")
    return (case_dir / command.store / "manifest.json").is_file() and not staged


def killed_state(command: Command, case_dir: Path) -> str:
    """What a kill interrupted, in words (for messages): finished shards, checkpoints, stages."""
    store = case_dir / command.store
    shards = len(list(store.rglob("shard-*.h5.sha256"))) if store.is_dir() else 0
    parts = [f"{shards} shards finished"]
    if command.name == "overwrite":
        parts = [f"{len(list(case_dir.glob('S.partial-*/*/*.sha256')))} staged shards finished, "
                 f"beside: {','.join(p.name.split('-')[0] for p in sorted(case_dir.glob('S.*-*'))) or 'nothing'}"]
    if command.name == "protect":
        parts.append("P.work: " + ",".join(sorted(p.name for p in (case_dir / "P.work").glob("*"))))
    if command.report:
        done = [p.parent.name for p in sorted((case_dir / "R" / "tiny").glob("*/stage.json"))
                if json.loads(p.read_text()).get("status") == "done"]
        parts.append("stages done: " + (",".join(done) or "none"))
    return "; ".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "phase", "point", "count"), KILL_POINTS,
                         ids=[f"{n}-{p}-{k}" for n, p, k, _ in KILL_POINTS])
def test_a_killed_command_resumes_to_identical_bytes(name, phase, point, count, tmp_path, references):
    command = COMMANDS[name]
    reference = references(command)
    begins, ends = command.phases[phase]
    delay = kill_fraction(name, phase, point, count) * (reference.appeared[ends] - reference.appeared[begins])
    for attempt in range(4):
        case_dir = prepare(tmp_path / f"attempt-{attempt}", command)
        where = f"mtlue {name} killed {delay:.3f} s into its {phase} phase"
        alive, code = kill_at(command, case_dir, begins, delay)
        check_killed_state(command, case_dir)
        where += f" ({killed_state(command, case_dir)})"
        print(where)
        if alive and not finished_before_kill(command, case_dir):
            code, output = finish(start(command.resume_args, case_dir), f"resumed mtlue {name}")
            expected_exit(command, code, output)
            assert_same(outcome(command, case_dir, code), reference.outcome, where + ", then resumed")
            return
        # the kill came after the work was done: the output must already be the reference's, and
        # the case is retried with an earlier kill so that it interrupts something
        if alive:
            code = reference.outcome.code  # killed during exit: the status it would have had
        assert_same(outcome(command, case_dir, code), reference.outcome, where + " (after the work was done)")
        delay /= 3
    pytest.fail(f"mtlue {name}: no kill landed while the command was working")
