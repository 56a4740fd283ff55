"""A verdict leaves through a status scripts can read: exit 0 PASS, 3 FAIL, 4 INCONCLUSIVE, and the same in
OUT/verdict.status; under torchrun every process exits 0 on a verdict (torchrun turns any other status into a
ChildFailedError traceback) and the status file carries the verdict."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main
from mtlue.commands.options import VERDICT_STATUS, verdict_exit
from mtlue.verdict import Verdict


class Judged:
    """What verdict_exit reads of a VerificationResult."""

    def __init__(self, outcome):
        self.outcome = outcome

    def verdict_or_reason(self):
        return (Verdict(self.outcome, "a reason"), None) if self.outcome else (None, "no row can be judged")


def leave(result, report_dir) -> int:
    with pytest.raises(SystemExit) as exited:
        verdict_exit(result, str(report_dir))
    return exited.value.code


@pytest.mark.parametrize("outcome, status", [("PASS", 0), ("FAIL", 3), ("INCONCLUSIVE", 4), (None, 4)])
def test_one_process_exits_with_the_verdicts_status_and_writes_it(tmp_path, monkeypatch, outcome, status):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert leave(Judged(outcome), tmp_path) == status
    assert (tmp_path / VERDICT_STATUS).read_text() == f"{outcome or 'INCONCLUSIVE'} {status}\n"


@pytest.mark.parametrize("variable", ["TORCHELASTIC_RUN_ID", "RANK"])
def test_under_torchrun_a_failed_verdict_exits_0_and_the_status_file_says_fail(tmp_path, monkeypatch, capsys,
                                                                               variable):
    monkeypatch.setenv(variable, "0")
    assert leave(Judged("FAIL"), tmp_path) in (0, None)
    assert (tmp_path / VERDICT_STATUS).read_text() == "FAIL 3\n"
    assert "exit status 3" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_verify_prints_the_verdict_and_exits_0_with_the_status_in_the_file(tmp_path):
    """Two processes: an INCONCLUSIVE verdict (the clean victim cannot clear chance by 0.95) is printed once,
    torchrun exits 0 without a ChildFailedError, and OUT/verdict.status says INCONCLUSIVE 4."""
    spec, store, out = "shapes:n=64,size=16,seed=4", str(tmp_path / "store"), str(tmp_path / "report")
    assert CliRunner().invoke(main, ["export", spec, store, "--quiet"]).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mtlue",
         "verify", store, "--clean", spec, "--min-clean-gain", "0.95", "--out", out, "--profile", "plain",
         "--weightings", "ew", "--seeds", "0", "--backbone", "small_cnn", "--epochs", "1", "--batch-size", "32",
         "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ChildFailedError" not in done.stderr
    assert done.stdout.count("verdict: INCONCLUSIVE") == 1
    assert open(os.path.join(out, VERDICT_STATUS)).read() == "INCONCLUSIVE 4\n"
