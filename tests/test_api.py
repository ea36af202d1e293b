"""The public Python API on hand-written runs and stores (no model trained)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sublearn
from sublearn.errors import ConfigError, DataError
from tests.view.synthetic import CONTROL_REPLY, TEACHER_REPLY, write_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path)


def test_import_sublearn_stays_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, sublearn; print('torch' in sys.modules, 'sublearn.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_load_experiment_takes_presets_and_typed_overrides(tmp_path: Path) -> None:
    cfg = sublearn.load_experiment(
        "toy/owl-numbers", {"students.seeds": [0, 1, 2], "store": str(tmp_path), "name": "x"}
    )
    assert cfg.students.seeds == [0, 1, 2] and cfg.name == "x"
    same = sublearn.load_experiment("toy/owl-numbers", ["students.seeds=[0, 1, 2]"])
    assert same.students.seeds == [0, 1, 2]
    with pytest.raises(ConfigError, match="no preset 'nope'"):
        sublearn.load_experiment("toy/nope")


def test_plan_marks_nothing_cached_in_an_empty_store(tmp_path: Path) -> None:
    cfg = sublearn.load_experiment("toy/owl-numbers", {"store": str(tmp_path / "store")})
    plan = sublearn.plan(cfg)
    assert plan.cached == [] and len(plan.to_run) == len(plan.tasks) > 0
    assert "world/main" in plan.to_run
    assert not (tmp_path / "store" / "world").exists()  # planning runs nothing


def test_open_run_gives_typed_effects_and_frames(run: Path) -> None:
    result = sublearn.open_run(run)
    primary = result.primary
    assert primary is not None and primary.effect == 1.5
    assert (primary.ci_low, primary.ci_high, primary.n) == (0.5, 2.5, 3)
    frame = result.effects_frame()
    assert list(frame["effect"]) == [1.5] and bool(frame["primary"].iloc[0])
    assert result.warnings == ["only 3 student seeds"]
    assert "summary.json" in result.paths


def test_paired_rows_carry_the_filter_verdicts(run: Path) -> None:
    rows = sublearn.open_run(run).paired()
    assert (rows[0].teacher, rows[0].control) == (TEACHER_REPLY, CONTROL_REPLY)
    assert rows[0].valid_for_both and rows[0].draws == {"s0": 2}
    assert not rows[1].valid_for_both and rows[1].control_reason == "invalid_format"
    with pytest.raises(ConfigError, match="teachers: owl-ft"):
        sublearn.open_run(run).paired("cat-ft")


def test_curves_frame_has_one_row_per_step(run: Path) -> None:
    frame = sublearn.open_run(run).curves_frame()
    assert list(frame["step"]) == [1, 2, 3, 4]
    assert set(frame["task"]) == {"train/owl-ft/kl/base0/treatment/s0"}


def test_store_browsing_loads_task_data_as_datasets(run: Path) -> None:
    store = sublearn.open_store(run.parent.parent / "store")
    pair = store.task("pair/owl-ft/s0")
    assert pair.datasets() == ["control", "treatment"]
    data = pair.dataset("treatment")
    assert data.num_rows == 2 and data[0]["messages"][-1]["content"] == TEACHER_REPLY
    assert [t.name for t in store.tasks(kind="filter")] == [
        "filter/owl-ft",
        "filter/owl-ft/control",
    ]
    assert store.task("train/owl-ft/kl/base0/treatment/s0").model_path().name == "model"
    with pytest.raises(DataError, match="holds no model"):
        pair.model_path()
    with pytest.raises(DataError, match="it has: control, treatment"):
        pair.dataset("accepted")


def test_rows_to_audit_are_chat_records_or_pairs(tmp_path: Path) -> None:
    from sublearn.api.detect import write_rows

    path = write_rows(
        [("p", "r"), {"messages": [{"role": "user", "content": "q"}]}], tmp_path / "x"
    )
    first = json.loads(path.read_text().splitlines()[0])
    assert first["messages"][-1] == {"role": "assistant", "content": "r"}
    with pytest.raises(DataError, match="row 0"):
        write_rows([42], tmp_path / "y")  # pyright: ignore[reportArgumentType]


def test_defend_rows_in_memory() -> None:
    rows = [("Continue: 1, 2", "3 , 4 ,5"), ("Continue: 7", "8,9")]
    result = sublearn.defend_rows(rows, ["canonicalize"])
    assert result.report["rows_in"] == 2 and len(result.rows) == result.report["rows_out"]
    assert all("messages" in r for r in result.rows)


def test_a_task_model_opens_as_a_backend(tmp_path: Path, micro_model: Path) -> None:
    import shutil

    folder = tmp_path / "store" / "train" / "abc"
    shutil.copytree(micro_model, folder / "model")
    (folder / "done.json").write_text(json.dumps({"kind": "train", "name": "train/x"}))
    task = sublearn.open_store(tmp_path / "store").task("train/x")
    backend = task.model(device="cpu", batch_size=2)
    try:
        scores = backend.token_logprobs([[{"role": "user", "content": "owl"}]], ["cat"])
        assert len(scores) == 1 and scores[0] and scores[0][0].logprob < 0
    finally:
        backend.close()
