"""`sublearn run`, `plan` and `report` on a micro experiment (a barely trained toy world)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from tests.experiments.numbers.conftest import DEMO, micro_overrides


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    store, out = root / "store", root / "run"
    code, output = _invoke("run", str(DEMO), "--out", str(out), *_sets(micro_overrides(store)))
    assert code == 0, output
    return store, out


def _cached(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) of (\d+) tasks cached", output)
    assert match, output
    return int(match.group(1)), int(match.group(2))


def test_plan_of_a_finished_run_finds_everything_cached(finished: tuple[Path, Path]) -> None:
    store, _ = finished
    code, output = _invoke("plan", str(DEMO), *_sets(micro_overrides(store)))
    assert code == 0, output
    cached, total = _cached(output)
    assert cached == total > 0


def test_plan_of_an_overlapping_config_shows_the_shared_tasks_as_cached(
    finished: tuple[Path, Path],
) -> None:
    store, out = finished
    first = len(json.loads((out / "manifest.json").read_text())["tasks"])
    more_seeds = [*micro_overrides(store), "students.seeds=[0, 1, 2]"]
    code, output = _invoke("plan", str(DEMO), *_sets(more_seeds))
    assert code == 0, output
    cached, total = _cached(output)
    assert cached == first and total > first
    assert "will run  pair/owl-ft/s2" in output
    assert "will run  world/main" not in output


def test_plan_of_an_empty_store_runs_everything(tmp_path: Path) -> None:
    code, output = _invoke("plan", str(DEMO), *_sets(micro_overrides(tmp_path / "empty")))
    assert code == 0, output
    cached, total = _cached(output)
    assert cached == 0 and total > 0
    assert not (tmp_path / "empty" / "world").exists()  # planning runs nothing


def test_report_rebuilds_the_summary_from_the_store(finished: tuple[Path, Path]) -> None:
    _, out = finished
    before = json.loads((out / "summary.json").read_text())
    (out / "summary.json").unlink()
    code, output = _invoke("report", str(out))
    assert code == 0, output
    assert json.loads((out / "summary.json").read_text())["effects"] == before["effects"]


def test_report_of_an_unfinished_run_says_what_to_do(tmp_path: Path) -> None:
    overrides = micro_overrides(tmp_path / "store")
    run = tmp_path / "run"
    run.mkdir()
    from sublearn.config import load_config
    from sublearn.experiments.numbers.config import ExperimentConfig

    (run / "config.yaml").write_text(load_config(ExperimentConfig, DEMO, overrides).to_yaml())
    code, output = _invoke("report", str(run))
    assert code == 2
    assert "not in the store" in output and "sublearn run" in output


def test_run_stops_before_training_when_conditions_cannot_be_equal(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    store, _ = finished
    trained = len(list(store.glob("train/*/done.json")))
    overrides = [*micro_overrides(store), "data.min_rows=100000"]
    code, output = _invoke("run", str(DEMO), "--out", str(tmp_path / "run"), *_sets(overrides))
    assert code == 2, output
    assert "data.min_rows is 100000" in output and "Traceback" not in output
    assert len(list(store.glob("train/*/done.json"))) == trained  # no student trained


def test_sweep_on_ray_reports_the_effect_per_grid_point(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    store, _ = finished
    rates = [1.0e-3, 3.0e-3]
    overrides = [
        *micro_overrides(store, executor="ray"),
        "executor.num_cpus=2",
        f"sweep={{grid: {{students.objectives.kl_numbers.learning_rate: {rates}}}}}",
    ]
    out = tmp_path / "sweep"
    code, output = _invoke("sweep", str(DEMO), "--out", str(out), *_sets(overrides))
    assert code == 0, output
    report = json.loads((out / "sweep.json").read_text())
    assert [
        p["point"]["students.objectives.kl_numbers.learning_rate"] for p in report["points"]
    ] == rates
    for point in report["points"]:
        summary = json.loads((out / "points" / point["label"] / "summary.json").read_text())
        assert point["primary"] == summary["effects"][summary["primary"]]
    assert (out / "sweep.png").is_file() and (out / "sweep.md").is_file()
    assert "learning_rate" in (out / "sweep.md").read_text()
    # The points share the world, the teachers and their data with the finished run.
    plan_code, plan_out = _invoke("plan", str(DEMO), *_sets(micro_overrides(store)))
    assert plan_code == 0 and _cached(plan_out)[0] == _cached(plan_out)[1]


def test_an_uncached_cross_model_fails_before_any_task_runs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    overrides = [*micro_overrides(store), "models.base1=not-a-real-org/not-a-model"]
    code, output = _invoke("run", str(DEMO), "--out", str(tmp_path / "run"), *_sets(overrides))
    assert code == 2, output
    assert "models.base1" in output and "not-a-real-org/not-a-model" in output
    assert not list(store.glob("*/*/done.json"))  # nothing was generated or trained


def test_a_mistyped_key_gets_a_suggestion(tmp_path: Path) -> None:
    code, output = _invoke("plan", str(DEMO), "--set", "students.sedes=[1]")
    assert code == 2
    assert "students.sedes: unknown key; did you mean 'seeds'?" in output


def test_a_corrupt_run_folder_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("name: [unclosed\n")
    code, output = _invoke("report", str(tmp_path))
    assert code == 2
    assert "config.yaml" in output and "not valid YAML" in output
