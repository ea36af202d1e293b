"""A real (micro) experiment whose store was damaged after it finished: the rerun names
each corrupt entry, recomputes it, and ends with the uninterrupted run's summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sublearn.config import load_config
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import run_experiment
from sublearn.runs import prepare_run_dir
from tests.experiments.numbers.conftest import DEMO, micro_overrides


def _run(store: Path, out: Path, *extra: str) -> tuple[dict, str]:
    cfg = load_config(ExperimentConfig, DEMO, [*micro_overrides(store), *extra])
    console = Console(record=True, width=400)
    summary = run_experiment(cfg, prepare_run_dir(out, cfg, "test"), console, show_progress=False)
    return summary, console.export_text()


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit(marker: Path) -> None:
    record = json.loads(marker.read_text())
    record["seconds"] = 0.5
    marker.write_text(json.dumps(record))


def _without_run_facts(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timings", "warnings")}


@pytest.mark.slow
def test_a_damaged_store_is_repaired_and_reproduces_the_summary(tmp_path: Path) -> None:
    store = tmp_path / "store"
    reference, _ = _run(store, tmp_path / "first")
    damaged = {
        "filter": lambda folder: _cut(folder / "accepted.jsonl"),
        "train": lambda folder: _cut(next(folder.rglob("*.safetensors"))),
        "generate": lambda folder: next(folder.rglob("*.jsonl")).unlink(),
        "evaluate": lambda folder: _edit(folder / "done.json"),
    }
    for kind, damage in damaged.items():
        damage(next(p for p in sorted((store / kind).iterdir()) if not p.name.startswith(".")))

    again, said = _run(store, tmp_path / "second")

    # Each said once as it is found, and once more among the report's warnings.
    lines = {line for line in said.splitlines() if "corrupt store entry" in line}
    assert sorted(line.split()[4].split("/")[0] for line in lines) == sorted(damaged), said
    assert sum("corrupt store entry" in w for w in again["warnings"]) == len(damaged)
    assert _without_run_facts(again) == _without_run_facts(reference)
    for kind in damaged:
        assert len(list((store / kind).glob(".*.corrupt-*"))) == 1
