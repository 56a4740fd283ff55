"""`mtlue budget` / a recipe's [budget]: the recipe at each ε, the curve, the smallest passing ε."""

import json
import os

import pytest
from click.testing import CliRunner

from cli import main
from mtlue.budget import placement_line, smallest_passing
from mtlue.errors import ConfigError
from mtlue.recipe import load_recipe, parse_epsilons

RECIPE = """
name = "tiny"
source = "shapes:n=96,size=16,seed=0"
[protect]
method = "texture"
[store]
shard_size = 64
[victims]
backbone = "small_cnn"
epochs = 1
batch_size = 32
weightings = ["ew"]
seeds = [0]
[[victims.profiles]]
name = "plain"
[verify]
min_clean_gain = 0.0
"""


def test_epsilons_are_sorted_positive_numbers():
    assert parse_epsilons("16,4,8,4") == (4, 8, 16)
    assert parse_epsilons([2.5, 8]) == (2.5, 8)
    for bad in ("", "0,8", "a,b"):
        with pytest.raises(ConfigError, match="--epsilons"):
            parse_epsilons(bad)


def test_a_recipe_budget_table_is_checked(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE + "[budget]\nepsilons = [8, 4]\n")
    assert load_recipe(str(path)).budget == {"epsilons": (4, 8)}
    path.write_text(RECIPE + "[budget]\neps = [8]\n")
    with pytest.raises(ConfigError, match=r"\[budget\] unknown key"):
        load_recipe(str(path))
    path.write_text(RECIPE + "[budget]\nepsilons = [-1]\n")
    with pytest.raises(ConfigError, match=r"\[budget\] epsilons"):
        load_recipe(str(path))


def test_smallest_passing_needs_every_larger_epsilon_to_pass():
    points = [{"epsilon": 4, "verdict": "PASS"}, {"epsilon": 8, "verdict": "FAIL"}, {"epsilon": 16, "verdict": "PASS"},
              {"epsilon": 32, "verdict": "PASS"}]
    assert smallest_passing(points) == 16  # 4 passing alone is noise below a failing 8
    assert smallest_passing(points[:2]) is None


def test_budget_command_writes_the_curve_and_each_store_records_its_place(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["budget", str(recipe), "--epsilons", "4,32", "--runs-dir", str(runs),
                                       "--jobs", "1", "--quiet"])
    assert result.exit_code in (0, 3), result.output
    budget_dir = runs / "tiny" / "budget"
    curve = json.loads((budget_dir / "budget.json").read_text())
    assert [p["epsilon"] for p in curve["points"]] == [4, 8, 32]  # the recipe's own ε is a point too
    assert curve["points"][0]["quality"]["psnr_db"] > curve["points"][-1]["quality"]["psnr_db"]
    for name in ("budget.md", "curve.png", "samples.png"):
        assert (budget_dir / name).stat().st_size > 0
    assert "needs" in result.output and "PSNR" in result.output
    # the clean victims were trained once and reused by every ε run
    assert os.path.samefile(runs / "tiny" / "victims" / "clean-plain-ew-none-s0" / "metrics.json",
                            budget_dir / "eps-4" / "victims" / "clean-plain-ew-none-s0" / "metrics.json")
    manifest = json.loads((budget_dir / "eps-32" / "store" / "manifest.json").read_text())
    assert manifest["budget"]["epsilon"] == 32
    assert "this release uses ε = 32/255" in placement_line(manifest["budget"])
    release = CliRunner().invoke(main, ["release", str(budget_dir / "eps-32" / "store"), str(tmp_path / "rel"),
                                        "--format", "imagefolder"])
    assert release.exit_code == 0, release.output
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "## Budget" in card and "This release uses ε = 32/255" in card  # the dataset card places its ε
    again = CliRunner().invoke(main, ["budget", str(recipe), "--epsilons", "4,32", "--runs-dir", str(runs),
                                      "--jobs", "1", "--quiet"])
    assert again.exit_code == result.exit_code and "[victims] skipped" in again.output


def test_budget_without_epsilons_is_refused(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(main, ["budget", str(recipe), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "no ε to try" in result.output
