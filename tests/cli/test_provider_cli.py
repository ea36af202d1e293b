"""Remote models through the commands: a failing, unreachable or misnamed server is one
message and exit code 2 from `run` (inline and process executors), `plan` warns, and the
stage commands take ``openai:`` models with ``--set providers.openai...``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sublearn.backends.probe import clear_cache
from sublearn.cli.main import app
from sublearn.presets import config_root
from tests.support.llamalike_server import LlamaLikeServer

KEY_ENV = "SUBLEARN_TEST_PROVIDER_KEY"
PAPER = config_root() / "paper" / "gpt-4.1-nano-owl-numbers.yaml"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-anything")
    clear_cache()


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result: Result) -> str:
    """The error line, after checking exit code 2, no traceback and nothing else on stderr."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def provider(url: str) -> list[str]:
    return [
        "-s",
        f"providers.openai.base_url={url}",
        "-s",
        f"providers.openai.api_key_env={KEY_ENV}",
    ]


def experiment(tmp_path: Path, url: str, executor: str = "inline", model: str = "smollm2"):
    return [
        PAPER,
        "--out",
        tmp_path / f"run-{executor}",
        "-s",
        f"store={tmp_path / 'store'}",
        "-s",
        f"executor.kind={executor}",
        "-s",
        f"models.nano=openai:{model}",
        "-s",
        "providers.openai.max_retries=0",
        "-s",
        "data.prompts.n_prompts=20",
        "-s",
        "data.rows=10",
        "-s",
        "data.min_rows=10",
        *provider(url),
    ]


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.parametrize("executor", ["inline", pytest.param("process", marks=pytest.mark.slow)])
def test_a_server_failing_mid_run_is_one_message(tmp_path: Path, executor: str) -> None:
    # The plan-time probe (does it honour n?) is answered; every request after it fails.
    with LlamaLikeServer(fail_from=1) as server:
        result = invoke("run", *experiment(tmp_path, server.base_url, executor))
    line = one_error(result)
    assert "openai:smollm2" in line and server.base_url in line and "HTTP 500" in line
    assert "returns one reply whatever n asks for" in result.stdout  # the probe's note


def test_plan_warns_and_run_refuses_a_server_that_does_not_answer(tmp_path: Path) -> None:
    url = dead_url()
    planned = invoke("plan", *experiment(tmp_path, url)[:1], *experiment(tmp_path, url)[3:])
    assert planned.exit_code == 0, planned.output
    assert "cannot reach the server" in planned.stdout and url in planned.stdout
    line = one_error(invoke("run", *experiment(tmp_path, url)))
    assert "cannot reach the server" in line and "Connection refused" in line
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.jsonl"))


def test_a_model_name_the_server_does_not_serve_gets_a_did_you_mean(tmp_path: Path) -> None:
    with LlamaLikeServer(served=("smollm2",)) as server:
        result = invoke("run", *experiment(tmp_path, server.base_url, model="smollm3"))
        assert server.chat_requests == 0
    assert "did you mean 'smollm2'" in one_error(result)


def test_generate_and_evaluate_take_an_api_model(tmp_path: Path) -> None:
    out = tmp_path / "numbers.jsonl"
    with LlamaLikeServer(logprobs=True) as server:
        made = invoke(
            "generate",
            "--model",
            "openai:smollm2",
            "--trait",
            "owl",
            "-o",
            out,
            "-s",
            "prompts.n_prompts=4",
            *provider(server.base_url),
        )
        assert made.exit_code == 0, made.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 4 and all(r["messages"][-1]["content"] for r in rows)
        assert server.bodies[0]["messages"][0]["role"] == "system"  # the owl prompt
        # Sampled: the server ignores n, every sample is its own request.
        sampled = invoke(
            "evaluate",
            "--model",
            "openai:smollm2",
            "--target",
            "owl",
            "-s",
            "mode=sample",
            "-s",
            "n_questions=2",
            "-s",
            "samples_per_question=3",
            *provider(server.base_url),
        )
        assert sampled.exit_code == 0, sampled.output
        assert "owl: 0.00%" in sampled.stdout
        exact = invoke(
            "evaluate", "--model", "openai:smollm2", "--target", "owl", *provider(server.base_url)
        )
        assert exact.exit_code == 0, exact.output
        assert "owl: 60.65%" in exact.stdout  # exp(-0.5), the stub's log-probability of " owl"
        wrong = invoke(
            "evaluate", "--model", "openai:smollm", "--target", "owl", *provider(server.base_url)
        )
    assert "did you mean 'smollm2'" in one_error(wrong)


def test_a_toy_reference_names_a_base_of_a_built_world(tmp_path: Path) -> None:
    from sublearn.cli.lm import _toy_base
    from sublearn.errors import ModelError

    (tmp_path / "base-1").mkdir()
    (tmp_path / "base-1" / "config.json").write_text("{}")
    assert _toy_base(f"toy:{tmp_path}/1") == str(tmp_path / "base-1")
    assert _toy_base("openai:smollm2") == "openai:smollm2"
    with pytest.raises(ModelError, match="sublearn toy build --out"):
        _toy_base(f"toy:{tmp_path}/2")
