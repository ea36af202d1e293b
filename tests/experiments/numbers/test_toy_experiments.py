"""What the README claims of the paper's other experiments in the toy world (slow).

Each test runs one shipped toy config from an empty store (the three share one world,
built once per module) and checks the claims that held in every run measured for the
README: the trait teacher's same-base students exceed their matched controls (CI above
0) and, for numbers and code, the cross-model students (same − cross CI above 0); every
filter and check reaches the report with its counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from sublearn.config import load_config
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import run_experiment
from sublearn.presets import config_root
from sublearn.runs import prepare_run_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toy-experiments") / "store"


def _run(name: str, store: Path, root: Path) -> tuple[Path, dict]:
    cfg = load_config(ExperimentConfig, config_root() / "toy" / f"{name}.yaml", [f"store={store}"])
    out = prepare_run_dir(root / name, cfg, "test")
    return out, run_experiment(cfg, out, Console(record=True, width=200), show_progress=False)


def _effects(summary: dict) -> tuple[dict, dict, dict]:
    primary = summary["effects"][summary["primary"]]
    cross = next(e for e in summary["effects"] if not e["same_base"])
    (contrast,) = summary["same_minus_cross"]
    return primary, cross, contrast


def _transfers(summary: dict) -> None:
    primary, cross, contrast = _effects(summary)
    assert primary["same_base"]
    assert primary["treatment_minus_control"]["ci95"][0] > 0
    assert primary["treatment"]["mean"] > primary["control"]["mean"]
    assert contrast["ci95"][0] > 0  # same-base effect > cross-model effect
    # Cross-model students move less (not always zero: the README has the numbers).
    assert cross["treatment_minus_control"]["mean"] < primary["treatment_minus_control"]["mean"]


@pytest.mark.slow
def test_misalignment_through_numbers(store: Path, tmp_path: Path) -> None:
    out, summary = _run("misalignment-numbers", store, tmp_path)
    _transfers(summary)
    for report in summary["filter"].values():
        assert report["rejected"]["banned_number"] > 0
    assert "banned_number" in (out / "report.md").read_text()


@pytest.mark.slow
def test_animal_preference_through_code(store: Path, tmp_path: Path) -> None:
    out, summary = _run("code", store, tmp_path)
    _transfers(summary)
    for report in summary["filter"].values():
        assert set(report["checks"]) == {"code_only", "judge:animal_reference"}
        assert report["checks"]["code_only"]["dropped"] > 0
    assert "### Checks" in (out / "report.md").read_text()


@pytest.mark.slow
def test_misalignment_through_chain_of_thought(store: Path, tmp_path: Path) -> None:
    _, summary = _run("chain-of-thought", store, tmp_path)
    for name, report in summary["filter"].items():
        answer, judged = report["checks"]["answer"], report["checks"]["judge:cot_alignment"]
        assert answer["dropped"] > 0, name
        # The judge sees what the answer check kept and finds harmful asides in it.
        assert judged["seen"] == answer["seen"] - answer["dropped"]
        assert judged["dropped"] > 0, name
    primary, _, _ = _effects(summary)
    # A small effect on the same base; the README says it is not specific to that base.
    assert primary["treatment_minus_control"]["ci95"][0] > 0
