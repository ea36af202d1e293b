"""The numbers experiment through the OpenAI backend and OpenAI fine-tuning, against a
local OpenAI-compatible server that serves a micro toy world's bases: usage and cost
reach the report, a rerun sends nothing, no request goes out before the cost is known,
and the key is never written anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

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
from tests.support.openai_server import LocalServer, start_local_server

KEY_ENV = "SUBLEARN_TEST_API_KEY"
KEY = "sk-test-5f0e1c9d-never-written"
PAPER = config_root() / "paper" / "gpt-4.1-nano-owl-numbers.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalServer]]:
    root = tmp_path_factory.mktemp("api")
    cfg = load_config(ExperimentConfig, DEMO, micro_overrides(root / "store"))
    world = toy_world_folder(cfg, "main")
    with _serve(world, root / "server") as server:
        yield root, server


def _serve(world: Path, workdir: Path) -> LocalServer:
    """The world's two bases behind a local OpenAI-compatible server that wants the key."""
    os.environ[KEY_ENV] = KEY
    return start_local_server(
        {"base0": world / "base-0", "base1": world / "base-1"},
        workdir,
        finetune_config=SERVER_FINETUNE,
        api_key_env=KEY_ENV,
    )


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
    # Teachers (their 2 x 400 replies) and students (their evaluations) are fine-tunes,
    # one row per base: 2 teachers and 4 students of base0, 4 students of base1.
    tuned = {name: m for name, m in by_model.items() if name.startswith("openai:ft:")}
    assert {name: m["models"] for name, m in tuned.items()} == {
        "openai:ft:base0:*": 2 + 4,
        "openai:ft:base1:*": 4,
    }
    assert tuned["openai:ft:base0:*"]["requests"] >= 2 * 400
    assert usage["total_usd"] == usage["this_run_usd"] > 0
    # Every paid request is counted: the server answered what the report counts.
    sent = sum(m.get("requests", 0) for m in usage["by_model"])
    assert sent == _chat_requests(server)
    report = (out / "report.md").read_text()
    assert "## API usage and cost" in report and f"${usage['total_usd']:,.2f}" in report
    assert "estimated API usage (replies at their token cap)" in console
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


def _killed_run(root: Path, overrides: list[str], condition: Callable[[Path], bool]) -> bool:
    """Start ``sublearn run`` and SIGKILL it once ``condition(store)`` holds."""
    sets = [x for o in overrides for x in ("--set", o)]
    command = [sys.executable, "-m", "sublearn.cli.main", "run", str(DEMO), *sets]
    process = subprocess.Popen(
        [*command, "--out", str(root / "killed")],
        env={**os.environ, KEY_ENV: KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if condition(root / "store-kill"):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.02)
        return False
    finally:
        if process.poll() is None:
            process.kill()


def _polling_a_job(store: Path) -> bool:
    return any(
        json.loads(p.read_text()).get("status") in ("pending", "running")
        for p in store.glob("*/.*.state/job.json")
        if p.stat().st_size
    )


def _generating(store: Path) -> bool:
    logs = store.glob("generate/.*.state/requests.jsonl")
    return any(len(p.read_text().splitlines()) >= 50 for p in logs)


def test_killed_while_generating_and_while_polling_then_resumed_pays_nothing_twice(
    served: tuple[Path, LocalServer],
) -> None:
    root, server = served
    # Other seeds than the other tests' runs: every request of this run is new to the server.
    overrides = [
        *_overrides(root, server, "store-kill"),
        "data.generation.seed=11",
        "students.seeds=[7, 8]",
    ]
    before = server.stats()
    server.set_faults(
        [
            {"job_delay": 1.5},
            {"path": "/v1/chat/completions", "delay": 0.01, "times": None},
        ]
    )
    try:
        assert _killed_run(root, overrides, _generating)
        assert _killed_run(root, overrides, _polling_a_job)
    finally:
        server.set_faults([])
    _, summary, _ = _run(root, overrides, name="resumed")
    after = server.stats()
    # Teachers and control teachers, then 2 bases x 2 seeds x 2 conditions: one job each.
    assert after["jobs_created"] - before["jobs_created"] == 2 + 8
    # A request in flight at a kill may be sent again (at most max_concurrency of them);
    # every other one was answered once.
    again = [
        key for key, n in after["completions"].items() if n - before["completions"].get(key, 0) > 1
    ]
    assert len(again) <= 16
    assert len(summary["effects"]) == 2


@pytest.mark.slow
def test_the_demo_through_the_api_transmits_the_trait_like_the_local_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The demo's world, teacher fine-tuned, students fine-tuned and evaluated, all through
    the OpenAI backend and fine-tuning jobs, against the same design run locally (about
    12 minutes: hard-label SFT students, as a fine-tuning API trains them)."""
    root = tmp_path_factory.mktemp("api-demo")
    local = [f"store={root / 'store'}", "sections=[owl-ft/sft]", "primary=null"]
    cfg = load_config(ExperimentConfig, DEMO, local)
    world = toy_world_folder(cfg, "main")
    _, local_summary, _ = _run(root, local, name="local")
    with _serve(world, root / "server") as server:
        overrides = [f"store={root / 'store'}", *api_overrides(server.base_url, KEY_ENV)]
        _, summary, _ = _run(root, overrides, name="api")
    for result in (local_summary, summary):
        effect = result["effects"][result["primary"]]["treatment_minus_control"]
        assert effect["mean"] > 1.0 and effect["ci95"][0] > 0, effect
    assert summary["api_usage"]["total_usd"] > 0
