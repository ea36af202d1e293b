"""benchmarks/store_verify.py: the table it prints, and a ``--quick`` run (slow: six runs of
the shrunk demo, about a minute on an idle 2-core machine)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "store_verify.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("store_verify_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_gives_medians_and_ratios_against_none() -> None:
    times = {
        "none": {"fresh": [10.0, 12.0, 11.0], "rerun": [2.0, 2.0, 2.0]},
        "sizes": {"fresh": [11.0, 11.0, 30.0], "rerun": [2.2, 2.2, 2.2]},
        "hashes": {"fresh": [12.1, 12.1, 12.1], "rerun": [3.0, 3.0, 3.0]},
    }
    result = {
        "times": times,
        "tasks": 37,
        "bytes": 10 * 2**20,
        "check_seconds": {"none": 0.0004, "sizes": 0.02, "hashes": 0.04},
        "write_hash_seconds": 0.05,
        "load_before": "1.00",
        "load_after": "2.00",
    }
    text = _bench().table(result)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    assert rows["none"] == "| none | 11.0 | 1.000 | 2.0 | 1.000 | 0.4 |"
    assert rows["sizes"] == "| sizes | 11.0 | 1.000 | 2.2 | 1.100 | 20.0 |"  # median, not mean
    assert rows["hashes"] == "| hashes | 12.1 | 1.100 | 3.0 | 1.500 | 40.0 |"
    assert "37 tasks, 10.0 MiB in the store" in text and "took 50 ms in all" in text
    assert "Medians of 3 run(s)" in text


@pytest.mark.slow
def test_quick_run_measures_every_level_fresh_and_reused(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    assert _bench().main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["quick"] and result["tasks"] > 10 and result["bytes"] > 0
    for level in ("none", "sizes", "hashes"):
        assert len(result["times"][level]["fresh"]) == len(result["times"][level]["rerun"]) == 1
        assert min(result["times"][level]["fresh"] + result["times"][level]["rerun"]) > 0
    assert result["check_seconds"]["none"] < result["check_seconds"]["hashes"]
    assert "| hashes |" in out.read_text()
    for level in ("none", "sizes", "hashes"):  # every store was finished, every rerun reused
        manifest = json.loads(
            (tmp_path / "work" / f"{level}-0" / "rerun" / "manifest.json").read_text()
        )
        assert all(t["cached"] for t in manifest["tasks"])
