"""`mtlue run` and `mtlue verify`: stages, fingerprints, resume, verdict exit codes."""

import json
import os

import pytest
from click.testing import CliRunner

import cli
from mtlue.errors import ConfigError
from mtlue.pipeline import STAGES, plan_run, run_pipeline, stage_fingerprints
from mtlue.recipe import load_recipe
from mtlue.stages import Stage

TINY_RECIPE = """
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
base = "{base}"
epochs = 2
batch_size = 32
generator_width = 8
[store]
shard_size = 40
[victims]
backbone = "small_cnn"
epochs = {victim_epochs}
batch_size = 32
weightings = ["ew", "rlw"]
seeds = [0]
defenses = ["none", "bdr2"]
defense_weightings = ["ew"]
[verify]
max_learnability = 0.2
"""


def write_recipe(tmp_path, base="tap", victim_epochs=1, name="tiny.toml", source=None):
    path = tmp_path / name
    text = TINY_RECIPE.format(base=base, victim_epochs=victim_epochs)
    if source is not None:
        text = text.replace('source = "shapes:n=96,size=16,seed=3"', f'source = "{source}"')
    path.write_text(text)
    return str(path)


def test_recipe_change_reruns_exactly_the_affected_stages(tmp_path):
    before = stage_fingerprints(plan_run(load_recipe(write_recipe(tmp_path, victim_epochs=1))))
    after = stage_fingerprints(plan_run(load_recipe(write_recipe(tmp_path, victim_epochs=2, name="b.toml"))))
    changed = [s for s in STAGES if before[s] != after[s]]
    assert changed == ["victims", "report"]
    other_base = stage_fingerprints(plan_run(load_recipe(write_recipe(tmp_path, base="sep", name="c.toml"))))
    assert [s for s in STAGES if before[s] != other_base[s]] == ["generator", "shards", "victims", "report"]


def test_recipe_with_unknown_key_names_it(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TINY_RECIPE.format(base="tap", victim_epochs=1).replace("generator_width = 8", "generatr_width = 8"))
    with pytest.raises(ConfigError, match="generatr_width"):
        plan_run(load_recipe(str(path)))


def test_stage_is_done_only_after_finish_and_wiped_on_new_fingerprint(tmp_path):
    stage = Stage(str(tmp_path), "victims", "a" * 64)
    stage.begin({"x": 1})
    (tmp_path / "victims" / "partial.txt").write_text("half")
    assert not stage.is_done()  # a killed stage is never taken as finished
    stage.begin({"x": 1})
    assert (tmp_path / "victims" / "partial.txt").exists()  # same fingerprint: resumed in place
    stage.finish({"x": 1})
    assert stage.is_done()
    changed = Stage(str(tmp_path), "victims", "b" * 64)
    assert not changed.is_done()
    changed.begin({"x": 2})
    assert not (tmp_path / "victims" / "partial.txt").exists()


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_report(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path))
    uninterrupted = run_pipeline(recipe, str(tmp_path / "a"), device="cpu", progress=False, log=lambda _: None)
    assert set(uninterrupted["stages"].values()) == {"ran"}
    assert uninterrupted["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")

    import mtlue.train as train_module  # mtlue.verify imports train_model when a victim trains

    real_train = train_module.train_model
    calls = {"n": 0}

    def dying_train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # die inside the victims stage, after two victims finished
            raise Interrupt()
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_model", dying_train)
    with pytest.raises(Interrupt):
        run_pipeline(recipe, str(tmp_path / "b"), device="cpu", progress=False, log=lambda _: None)
    assert not os.path.exists(tmp_path / "b" / "tiny" / "report" / "report.json")
    monkeypatch.setattr(train_module, "train_model", real_train)

    with pytest.raises(ConfigError, match="--resume"):
        run_pipeline(recipe, str(tmp_path / "b"), device="cpu", progress=False, log=lambda _: None)
    resumed = run_pipeline(recipe, str(tmp_path / "b"), device="cpu", resume=True, progress=False, log=lambda _: None)
    assert resumed["stages"] == {"surrogate": "skipped", "generator": "skipped", "shards": "skipped",
                                 "victims": "ran", "report": "ran"}
    first = json.loads((tmp_path / "a" / "tiny" / "report" / "report.json").read_text())
    second = json.loads((tmp_path / "b" / "tiny" / "report" / "report.json").read_text())
    assert first["rows"] == second["rows"] and first["verdict"] == second["verdict"]
    assert {(r["profile"], r["weighting"], r["defense"]) for r in first["rows"]} == {
        ("plain", "ew", "none"), ("plain", "ew", "bdr2"), ("plain", "rlw", "none")}
    for name in ("report.md", "figures"):
        assert os.path.exists(tmp_path / "b" / "tiny" / "report" / name)
    manifest = json.loads((tmp_path / "b" / "tiny" / "store" / "manifest.json").read_text())
    assert manifest["verification"]["verdict"] == second["verdict"]

    again = run_pipeline(recipe, str(tmp_path / "b"), device="cpu", resume=True, progress=False, log=lambda _: None)
    assert set(again["stages"].values()) == {"skipped"}


def test_em_base_trains_no_clean_surrogate(tmp_path):
    """EM trains its own surrogate alongside the generator: the surrogate stage finishes without training one."""
    recipe = load_recipe(write_recipe(tmp_path, base="em"))
    result = run_pipeline(recipe, str(tmp_path / "runs"), device="cpu", progress=False, log=lambda _: None)
    run_dir = tmp_path / "runs" / "tiny"
    stage = json.loads((run_dir / "surrogate" / "stage.json").read_text())
    assert stage["status"] == "done" and stage["summary"]["trained"] is False
    assert not (run_dir / "surrogate" / "model.pt").exists()
    manifest = json.loads((run_dir / "store" / "manifest.json").read_text())
    assert manifest["protection"]["base"] == "em" and "path" not in manifest["protection"]["surrogate"]
    assert result["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert manifest["source"]["content"] and manifest["source"]["spec"] == "shapes:n=96,size=16,seed=3"
    # pointed at other data, --resume re-runs every stage instead of reprinting the old verdict
    other = load_recipe(write_recipe(tmp_path, base="em", name="tiny.toml", source="shapes:n=96,size=16,seed=5"))
    again = run_pipeline(other, str(tmp_path / "runs"), device="cpu", resume=True, progress=False, log=lambda _: None)
    assert set(again["stages"].values()) == {"ran"}
    manifest = json.loads((run_dir / "store" / "manifest.json").read_text())
    assert manifest["source"]["spec"] == "shapes:n=96,size=16,seed=5"


VERIFY_FAST = ["--profile", "plain", "--weightings", "ew", "--seeds", "0", "--backbone", "small_cnn", "--epochs", "3",
               "--batch-size", "32", "--device", "cpu", "--jobs", "1", "--quiet"]


@pytest.mark.slow
def test_verify_exits_3_when_a_release_is_learnable(tmp_path):
    """A clean export passed off as a release teaches everything: FAIL, learnability 1."""
    runner = CliRunner()
    store = str(tmp_path / "clean-store")
    spec = "shapes:n=96,size=16,seed=4"
    assert runner.invoke(cli.main, ["export", spec, store]).exit_code == 0
    result = runner.invoke(cli.main, ["verify", store, "--clean", spec, "--min-clean-gain", "0.01",
                                      "--out", str(tmp_path / "report"), *VERIFY_FAST])
    assert result.exit_code == 3, result.output
    assert "FAIL" in result.output and "not run:" in result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verdict"] == "FAIL" and report["groups"][0]["worst"] > 0.9
    manifest = json.loads((tmp_path / "clean-store" / "manifest.json").read_text())
    assert manifest["verification"]["verdict"] == "FAIL"
    # a clean victim that cannot clear chance by the recipe's margin proves nothing: exit 4
    again = runner.invoke(cli.main, ["verify", store, "--clean", spec, "--min-clean-gain", "0.95",
                                     "--out", str(tmp_path / "report"), *VERIFY_FAST])
    assert again.exit_code == 4, again.output
    assert "INCONCLUSIVE" in again.output


def test_changing_the_source_changes_every_stage_fingerprint(tmp_path):
    for base in ("tap", "em"):
        before = stage_fingerprints(plan_run(load_recipe(write_recipe(tmp_path, base=base, name=f"{base}.toml"))))
        other = write_recipe(tmp_path, base=base, name=f"{base}-other.toml", source="shapes:n=96,size=16,seed=5")
        after = stage_fingerprints(plan_run(load_recipe(other)))
        assert [s for s in STAGES if before[s] == after[s]] == [], base
@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "pipelines"))))
def test_every_shipped_recipe_builds_its_configs(name):
    recipe = load_recipe(os.path.join(os.path.dirname(__file__), "..", "pipelines", name))
    plan = plan_run(recipe)
    assert plan.verify.profiles and all(p.weightings for p in plan.verify.profiles)
    assert "none" in plan.verify.defenses
    data = {"spec": recipe.source, "content": "0" * 64}  # the real datasets are not on this machine
    assert len(set(stage_fingerprints(plan, data).values())) == len(STAGES)
