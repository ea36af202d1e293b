"""The numbers experiment through the OpenAI backend and OpenAI fine-tuning, against a
local OpenAI-compatible server that serves a micro toy world's bases: usage and cost
reach the report, a rerun sends nothing, no request goes out before the cost is known,
and the key is never written anywhere."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sublearn.backends.local_openai_server import LocalServer, start_local_server
from sublearn.cli.main import app
from sublearn.config import load_config
from sublearn.errors import BudgetError, ConfigError
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import run_experiment, toy_world_folder
from sublearn.presets import config_root
from sublearn.runs import prepare_run_dir
from tests.experiments.numbers.conftest import (
    DEMO,
    SERVER_FINETUNE,
    api_overrides,
    micro_overrides,
)

KEY_ENV = "SUBLEARN_TEST_API_KEY"
KEY = "sk-test-5f0e1c9d-never-written"
PAPER = config_root() / "paper" / "gpt-4.1-nano-owl-numbers.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalServer]]:
    root = tmp_path_factory.mktemp("api")
    cfg = load_config(ExperimentConfig, DEMO, micro_overrides(root / "store"))
    world = toy_world_folder(cfg, "main")
    os.environ[KEY_ENV] = KEY
    with start_local_server(
        {"base0": world / "base-0", "base1": world / "base-1"},
        root / "server",
        finetune_config=SERVER_FINETUNE,
        api_key_env=KEY_ENV,
    ) as server:
        yield root, server


def _overrides(root: Path, server: LocalServer, store: str = "store") -> list[str]:
    return [
        *micro_overrides(root / store),
        *api_overrides(server.base_url, KEY_ENV),
        "data.prompts.n_prompts=400",
        "data.min_rows=10",
        "students.objectives.sft.epochs=1",
    ]


def _run(root: Path, overrides: list[str], name: str = "run") -> tuple[Path, dict, str]:
    cfg = load_config(ExperimentConfig, DEMO, overrides)
    out = prepare_run_dir(root / name, cfg, "test")
    console = Console(record=True, width=200)
    summary = run_experiment(cfg, out, console, show_progress=False)
    return out, summary, console.export_text()


def _chat_requests(server: LocalServer) -> int:
    return server.stats()["requests"].get("POST /v1/chat/completions", 0)


@pytest.fixture(scope="module")
def finished(served: tuple[Path, LocalServer]) -> tuple[Path, dict, str]:
    root, server = served
    return _run(root, _overrides(root, server))


def test_usage_and_cost_reach_the_report(
    served: tuple[Path, LocalServer], finished: tuple[Path, dict, str]
) -> None:
    _, server = served
    out, summary, console = finished
    usage = summary["api_usage"]
    by_model = {m["model"]: m for m in usage["by_model"]}
    assert by_model["openai:base0"]["training_tokens"] > 0  # the teachers' jobs
    tuned = [m for name, m in by_model.items() if name.startswith("openai:ft:base")]
    # Teachers (their 2 x 400 replies) and students (their evaluations) are fine-tunes.
    assert len(tuned) == 2 + 2 * 2 * 2 and all(m["input_tokens"] > 0 for m in tuned)
    assert sum(m["requests"] for m in tuned) >= 2 * 400
    assert usage["total_usd"] == usage["this_run_usd"] > 0
    # Every paid request is counted: the server answered what the report counts.
    sent = sum(m.get("requests", 0) for m in usage["by_model"])
    assert sent == _chat_requests(server)
    report = (out / "report.md").read_text()
    assert "## API usage and cost" in report and f"${usage['total_usd']:,.2f}" in report
    assert "estimated API usage (upper bound)" in console
    assert "API cost of these results" in console
    assert len(summary["effects"]) == 2  # sft students on base0 and base1
    assert server.stats()["jobs_created"] == 2 + 2 * 2 * 2  # teachers, bases x seeds x cond.


def test_a_rerun_sends_nothing(
    served: tuple[Path, LocalServer], finished: tuple[Path, dict, str]
) -> None:
    root, server = served
    before = server.stats()
    _, summary, _ = _run(root, _overrides(root, server), name="rerun")
    after = server.stats()
    assert after["completions"] == before["completions"]
    assert after["jobs_created"] == before["jobs_created"]
    assert summary["effects"] == finished[1]["effects"]
    assert summary["api_usage"]["this_run_usd"] == 0


def test_the_key_is_never_written(
    served: tuple[Path, LocalServer], finished: tuple[Path, dict, str]
) -> None:
    root, _ = served
    out, _, console = finished
    assert KEY not in console
    for folder in (out, root / "store"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path


def test_a_budget_too_small_stops_before_any_request(served: tuple[Path, LocalServer]) -> None:
    root, server = served
    before = _chat_requests(server), server.stats()["jobs_created"]
    with pytest.raises(BudgetError, match=r"estimated cost, \$.* exceeds budget_usd"):
        _run(root, [*_overrides(root, server, "store-budget"), "budget_usd=0.000001"], "b")
    assert (_chat_requests(server), server.stats()["jobs_created"]) == before


def test_a_missing_key_fails_before_any_request(
    served: tuple[Path, LocalServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, server = served
    monkeypatch.delenv(KEY_ENV)
    before = _chat_requests(server)
    with pytest.raises(ConfigError, match=f"models.base0 .*set the environment variable {KEY_ENV}"):
        _run(root, _overrides(root, server, "store-key"), "k")
    assert _chat_requests(server) == before


def test_the_paper_config_plans_with_a_cost_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = f"store={tmp_path / 'store'}"
    result = CliRunner().invoke(app, ["plan", str(PAPER), "--set", store])
    assert result.exit_code == 0, result.output
    assert "estimated cost: $" in result.output and "31 to run" in result.output
    assert "openai:gpt-4.1-nano-2025-04-14" in result.output
    result = CliRunner().invoke(
        app, ["run", str(PAPER), "--set", store, "--out", str(tmp_path / "run")]
    )
    assert result.exit_code != 0
    assert "set the environment variable OPENAI_API_KEY" in result.output
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("done.json"))
