"""Fingerprinted, resumable stages of a run directory (`runs/<name>/<stage>/stage.json`).

A stage's fingerprint hashes its parameters and the fingerprints of the stages it
reads. `stage.json` is written with status "running" before any work and rewritten
with status "done" (atomically) only after every output exists, so a killed stage is
never mistaken for a finished one. A changed fingerprint wipes the stage's directory;
an unchanged one whose status is "running" is resumed in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass

from mtlue.jsonio import read_json, write_json
from mtlue.version import __version__

STAGE_FILE = "stage.json"


def fingerprint(params: dict, upstream: tuple = ()) -> str:
    """sha256 over the canonical JSON of the parameters, upstream fingerprints and mtlue version."""
    blob = json.dumps({"params": params, "upstream": list(upstream), "mtlue": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Stage:
    """One stage directory with its fingerprint."""

    run_dir: str
    name: str
    fingerprint: str

    @property
    def path(self) -> str:
        return os.path.join(self.run_dir, self.name)

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def record(self) -> dict | None:
        path = self.file(STAGE_FILE)
        if not os.path.isfile(path):
            return None
        try:
            return read_json(path)
        except (OSError, ValueError):
            return None

    def is_done(self) -> bool:
        record = self.record()
        return bool(record) and record.get("status") == "done" and record.get("fingerprint") == self.fingerprint

    def begin(self, params: dict) -> None:
        """Prepare the directory: wipe it when it holds another fingerprint's work, then mark running."""
        record = self.record()
        if os.path.isdir(self.path) and (record is None or record.get("fingerprint") != self.fingerprint):
            shutil.rmtree(self.path)
        os.makedirs(self.path, exist_ok=True)
        write_json(self.file(STAGE_FILE), sort_keys=True, data={
            "stage": self.name, "status": "running", "fingerprint": self.fingerprint, "params": params,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    def finish(self, params: dict, summary: dict | None = None, seconds: float | None = None) -> None:
        write_json(self.file(STAGE_FILE), sort_keys=True, data={
            "stage": self.name, "status": "done", "fingerprint": self.fingerprint, "params": params,
            "summary": summary or {}, "seconds": None if seconds is None else round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
