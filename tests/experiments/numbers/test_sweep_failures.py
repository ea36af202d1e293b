"""A sweep whose one point cannot work (too few valid rows for its min_rows) reports the
other points, lists the failed one with its error, exits 1, and leaves no process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.test_keep_going import _left_behind, _session
from tests.experiments.numbers.conftest import DEMO, micro_overrides


@pytest.mark.slow
def test_a_failing_point_leaves_the_others_reported(tmp_path: Path) -> None:
    overrides = [
        *micro_overrides(tmp_path / "store", executor="process"),
        "executor.workers=2",
        # 110 of 120 prompts answered validly by teacher and control both: not in the micro world.
        "sweep={grid: {data.min_rows: [2, 110]}}",
    ]
    sets = [x for o in overrides for x in ("--set", o)]
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "sublearn.cli.main", "sweep", str(DEMO), "-o", str(out), *sets]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = proc.communicate(timeout=900)
        assert _left_behind(proc.pid) == []
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
    said = stdout.decode() + stderr.decode()
    assert proc.returncode == 1, said
    assert "1 of 2 sweep points failed" in said and "Traceback" not in said
    report = json.loads((out / "sweep.json").read_text())
    by_min = {p["point"]["data.min_rows"]: p for p in report["points"]}
    assert by_min[2]["primary"]["treatment_minus_control"]["mean"] is not None
    assert by_min[110]["primary"] is None and "min_rows is 110" in by_min[110]["error"]
    assert report["failed"] == [by_min[110]["label"]]
    assert "## Failed points (1 of 2)" in (out / "sweep.md").read_text()
    assert (out / "points" / by_min[2]["label"] / "summary.json").is_file()
    assert not (out / "points" / by_min[110]["label"]).exists()
