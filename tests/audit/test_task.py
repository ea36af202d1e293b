"""``sublearn audit`` as an engine task: an audit stopped after scoring resumes from its scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from tests.audit.test_run import datasets  # noqa: F401  (a fixture)


def test_an_audit_stopped_after_scoring_resumes_without_scoring_again(
    micro_model: Path,
    datasets: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sublearn.audit.likelihood as likelihood
    import sublearn.audit.scoring as scoring

    data, control = datasets
    store, out = tmp_path / "store", tmp_path / "audit"
    args = ["audit", str(data), "--control", str(control), "--base", str(micro_model)]
    args += ["--trait", "owl", "--detector", "lls", "--threads", "1"]
    args += ["--store", str(store), "--out", str(out)]

    def stopped(*_: Any, **__: Any) -> None:
        raise RuntimeError("stopped after scoring")

    with monkeypatch.context() as patch:
        patch.setattr(likelihood, "lls", stopped)
        result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, RuntimeError), result.output
    assert not list(store.rglob("done.json")) and not (out / "audit.json").exists()
    kept = list(store.glob("audit/.*.state/scores/*.json"))
    assert len(kept) == 4  # data and control, with and without the trait prompt

    opened: list[str] = []
    real = scoring.open_scorer

    def counting(ref: str, **kwargs: Any) -> Any:
        opened.append(ref)
        return real(ref, **kwargs)

    monkeypatch.setattr(scoring, "open_scorer", counting)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert opened == []  # every score came from the stopped run's state
    report = json.loads((out / "audit.json").read_text())
    assert [v["detector"] for v in report["verdicts"]] == ["lls"]
    assert len(list((out / "scores").iterdir())) == 4
    assert not list(store.glob("audit/.*.state"))  # removed once the task is done
