"""Resume by killing: a real (micro) experiment is SIGKILLed at task boundaries, inside
generation and inside training; each rerun must end with exactly the results of an
uninterrupted run. Two runs at once on one store must share the work and corrupt nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.experiments.numbers.conftest import DEMO, micro_overrides

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _command(store: Path, out: Path, executor: str = "inline") -> list[str]:
    sets = [x for o in micro_overrides(store, executor) for x in ("--set", o)]
    return [sys.executable, "-m", "sublearn.cli.main", "run", str(DEMO), "--out", str(out), *sets]


def _run(store: Path, out: Path, executor: str = "inline") -> dict:
    result = subprocess.run(
        _command(store, out, executor), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def _kill_when(store: Path, out: Path, condition: Callable[[Path], bool]) -> bool:
    """Start a run and SIGKILL it as soon as ``condition(store)`` holds; False if it finished."""
    process = subprocess.Popen(
        _command(store, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while process.poll() is None:
            if store.is_dir() and condition(store):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.02)
        return False
    finally:
        if process.poll() is None:
            process.kill()


def _done(kind: str, count: int = 1) -> Callable[[Path], bool]:
    return lambda store: len(list(store.glob(f"{kind}/*/done.json"))) >= count


def _partial_generation(store: Path) -> bool:
    return any(p.is_file() for p in store.glob("generate/.*.state/*"))


def _training(store: Path) -> bool:
    return any(store.glob("train/.*.tmp-*/model")) or any(store.glob("train/.*.tmp-*/*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("reference")
    return _run(root / "store", root / "run")


def _effects(summary: dict) -> list:
    rows = [{k: v for k, v in row.items() if k != "warnings"} for row in summary["effects"]]
    return _approx(rows)


def _approx(value: Any) -> Any:
    """Numbers compared to float tolerance: students batched in other groups (after a
    kill, or on other workers) round differently in the last bits.

    The absolute floor is 1e-4 percentage points: with the micro run's 2 seeds the
    t-interval multiplies a rate's last-bit rounding (~2e-7 pp) by t = 12.7, which moves a
    bound by ~1e-5 pp, beyond a relative 1e-4 of a near-zero difference.
    """
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-4)
    return value


def test_killed_everywhere_then_resumed_equals_an_uninterrupted_run(
    reference: dict, tmp_path: Path
) -> None:
    store, out = tmp_path / "store", tmp_path / "run"
    kills = [
        _done("world"),  # boundary after the world
        _partial_generation,  # inside a generation, some rows saved
        _done("generate"),  # boundary between the two generations
        _done("filter", 2),  # boundary before the pairs
        _training,  # inside a student's training
        _done("train", 5),  # boundary among students
        _done("evaluate", 3),  # boundary among evaluations
    ]
    killed = sum(_kill_when(store, out, condition) for condition in kills)
    assert killed >= 5  # the micro run is quick: most kill points must have been hit
    resumed = _run(store, out)
    assert _effects(resumed) == _effects(reference)
    assert not list(store.glob("*/.*.tmp-*")), "a finished run leaves no temporary folder"


def test_two_concurrent_runs_on_one_store_share_the_work(reference: dict, tmp_path: Path) -> None:
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            _command(store, tmp_path / f"run{i}"),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    for i in range(2):
        summary = json.loads((tmp_path / f"run{i}" / "summary.json").read_text())
        assert _effects(summary) == _effects(reference)
    # Every task was written once: one done-marker per task folder, no leftovers.
    markers = list(store.glob("*/*/done.json"))
    assert len(markers) == len({m.parent for m in markers})
    assert not list(store.glob("*/.*.tmp-*"))


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_other_executors_give_the_inline_results(
    reference: dict, tmp_path: Path, executor: str
) -> None:
    """The same experiment on local worker processes and on a local Ray instance (CPU)."""
    if executor == "ray":
        pytest.importorskip("ray")
    summary = _run(tmp_path / "store", tmp_path / "run", executor)
    assert _effects(summary) == _effects(reference)
