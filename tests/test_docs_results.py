"""The measured-results pages and README's status table say exactly what results/*.json say."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_results", ROOT / "docs" / "gen_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the file executes
    spec.loader.exec_module(module)
    return module


gen = load_generator()

RESULT = {
    "title": "A tiny grid",
    "command": "mtlue verify S --clean shapes:n=64,size=16",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "machine": "2-core CPU",
    "date": "2026-01-02",
    "wall_s": 75,
    "table": {"columns": ["weighting", "worst", "result"], "rows": [["ew", 0.25, "FAIL"], ["uw", None, "not run"]]},
    "notes": ["a note"],
    "status_columns": ["weighting", "result"],
}
README = "# project\n\nintro\n\n<!-- results:status -->\nold text\n<!-- /results -->\n\nthe rest\n"


@pytest.fixture
def checkout(tmp_path):
    """A repository root holding one result, a README with the status markers and no pages yet."""
    (tmp_path / "results").mkdir()
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "results" / "grid.json").write_text(json.dumps(RESULT), encoding="utf-8")
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    return tmp_path


def test_the_committed_pages_and_readme_match_their_json():
    assert gen.differences(ROOT) == []


def test_every_committed_result_follows_the_schema():
    results = gen.load_results(ROOT / "results")
    assert results, "results/ holds no JSON"
    assert any(result.data.get("status_columns") for result in results), "nothing feeds README's status table"


def test_a_page_shows_the_command_commit_machine_and_every_cell(checkout):
    gen.write(checkout)
    page = (checkout / "docs" / "results" / "grid.md").read_text(encoding="utf-8")
    for text in ("# A tiny grid", RESULT["command"], RESULT["commit"], "2-core CPU", "2026-01-02", "1 min 15 s",
                 "| ew | 0.25 | FAIL |", "| uw | – | not run |", "- a note"):
        assert text in page
    assert "[A tiny grid](grid.md)" in (checkout / "docs" / "results" / "index.md").read_text(encoding="utf-8")
    assert gen.differences(checkout) == []


def test_the_readme_block_holds_the_status_columns_and_nothing_else_changes(checkout):
    gen.write(checkout)
    readme = (checkout / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# project\n\nintro\n\n<!-- results:status -->")
    assert readme.endswith("<!-- /results -->\n\nthe rest\n")
    assert "old text" not in readme
    assert "| weighting | result |" in readme and "| ew | FAIL |" in readme
    assert "0.25" not in readme  # `worst` is not a status column
    assert "(docs/results/grid.md)" in readme


def test_a_changed_number_fails_the_check_until_regenerated(checkout):
    gen.write(checkout)
    changed = copy.deepcopy(RESULT)
    changed["table"]["rows"][0][2] = "PASS"
    (checkout / "results" / "grid.json").write_text(json.dumps(changed), encoding="utf-8")
    found = gen.differences(checkout)
    assert any(line.startswith("docs/results/grid.md") for line in found)
    assert any(line.startswith("README.md") for line in found)
    assert gen.main(["--check", "--root", str(checkout)]) == 1
    assert gen.main(["--root", str(checkout)]) == 0
    assert gen.main(["--check", "--root", str(checkout)]) == 0


def test_a_hand_edited_page_fails_the_check(checkout):
    gen.write(checkout)
    page = checkout / "docs" / "results" / "grid.md"
    page.write_text(page.read_text(encoding="utf-8").replace("0.25", "0.05"), encoding="utf-8")
    assert gen.differences(checkout) == ["docs/results/grid.md: differs from what results/*.json say"]


def test_a_page_whose_json_is_gone_is_reported_then_removed(checkout):
    gen.write(checkout)
    (checkout / "results" / "grid.json").unlink()
    (checkout / "docs" / "results" / "notes.md").write_text("# written by hand\n", encoding="utf-8")
    assert "docs/results/grid.md: its JSON is gone" in gen.differences(checkout)
    gen.write(checkout)
    assert not (checkout / "docs" / "results" / "grid.md").exists()
    assert (checkout / "docs" / "results" / "notes.md").exists()  # not generated: left alone


@pytest.mark.parametrize("change, named", [
    (lambda r: r.pop("commit"), "'commit'"),
    (lambda r: r.pop("wall_s"), "'wall_s'"),
    (lambda r: r.update(wall_s="75"), "'wall_s'"),
    (lambda r: r.update(comit="x"), "'comit'"),
    (lambda r: r["table"]["rows"].append(["dwa", 0.1]), "rows[2]"),
    (lambda r: r["table"]["rows"][0].__setitem__(1, [0.25]), "rows[0]"),
    (lambda r: r.update(status_columns=["seed"]), "'seed'"),
    (lambda r: r.update(notes="one string"), "notes"),
])
def test_a_json_off_the_schema_is_refused_naming_file_and_key(checkout, change, named):
    broken = copy.deepcopy(RESULT)
    change(broken)
    (checkout / "results" / "grid.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(gen.ResultsError, match="results/grid.json") as error:
        gen.differences(checkout)
    assert named in str(error.value)


def test_a_readme_without_the_markers_is_an_error(checkout):
    (checkout / "README.md").write_text("# project\n", encoding="utf-8")
    with pytest.raises(gen.ResultsError, match="results:status"):
        gen.write(checkout)
