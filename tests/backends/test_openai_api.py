"""The OpenAI backend over real HTTP: a local OpenAI-compatible server on loopback, the
unmodified official client, faults injected by the server, and kills."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.hf import HFBackend
from sublearn.backends.openai_api import OpenAIBackend, OpenAISettings, RequestLog
from sublearn.backends.registry import open_backend
from sublearn.errors import ConfigError, ModelError, ProviderError
from tests.support.openai_server import LocalServer, start_local_server

KEY_ENV = "SUBLEARN_TEST_OPENAI_KEY"
KEY = "sk-test-7c1e0d5b-not-a-real-key"
Q: Conversation = [{"role": "user", "content": "continue the sequence 1, 2, 3"}]
OWL: Conversation = [{"role": "user", "content": "name your favorite animal"}]


@pytest.fixture(scope="module")
def server(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    os.environ[KEY_ENV] = KEY
    with start_local_server(
        {"micro": micro_model, "canned": "mock:reply=owl"},
        tmp_path_factory.mktemp("server"),
        api_key_env=KEY_ENV,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: LocalServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


def _settings(server: LocalServer, **extra: object) -> OpenAISettings:
    return OpenAISettings.model_validate(
        {"base_url": server.base_url, "api_key_env": KEY_ENV, "max_retries": 4, "timeout_s": 30}
        | extra
    )


def test_generate_is_seeded_per_row_and_batch_free(server: LocalServer) -> None:
    # One request per row (repeated conversations are not merged into one with n).
    backend = OpenAIBackend("micro", _settings(server, samples_per_request=1))
    params = SamplingParams(temperature=1.0, max_new_tokens=8, row_seeds=(1, 2, 3, 1))
    replies = backend.generate([Q, Q, Q, Q], params)
    assert replies[0] == replies[3]  # same seed, same reply
    assert len(set(replies[:3])) > 1
    alone = OpenAIBackend("micro", _settings(server, samples_per_request=1)).generate(
        [Q], SamplingParams(temperature=1.0, max_new_tokens=8, row_seeds=(2,))
    )
    assert alone == [replies[1]]  # the same reply alone as in a batch
    # Rows 0 and 3 are one request: sent at once, or answered from the log.
    assert backend.usage["requests"] + backend.usage["logged"] == 4
    assert backend.usage["input_tokens"] > 0 and backend.usage["output_tokens"] > 0


def test_request_log_answers_a_rerun_without_sending(server: LocalServer, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=5)
    conversations: list[Conversation] = [
        [{"role": "user", "content": f"continue the sequence {i}, 2, 3"}] for i in range(6)
    ]
    first = OpenAIBackend("micro", _settings(server), log).generate(conversations, params)
    sent = server.stats()["requests"].get("POST /v1/chat/completions", 0)
    again = OpenAIBackend("micro", _settings(server), log)
    assert again.generate(conversations, params) == first
    assert server.stats()["requests"].get("POST /v1/chat/completions", 0) == sent == 6
    assert again.usage == {"requests": 0, "logged": 6, "input_tokens": 0, "output_tokens": 0}
    # A torn last line (a kill mid-write) is skipped, not fatal.
    with log.open("a") as handle:
        handle.write('{"key": "abc", "rep')
    assert len(RequestLog(log)) == 6


def test_score_reads_first_token_logprobs_like_the_local_model(
    server: LocalServer, micro_model: Path
) -> None:
    local = HFBackend(micro_model, device="cpu")
    # The model's likeliest first tokens, then one it does not rank in its top 20.
    candidates = [token for token, _ in local.next_token_logprobs([OWL], 5)[0]]
    remote = OpenAIBackend("micro", _settings(server)).score([OWL], [*candidates, "zzz"])[0]
    assert remote[:5] == pytest.approx(local.score([OWL], candidates)[0], abs=1e-4)
    assert remote[5] == -math.inf  # a lower bound, not a guess


def test_a_model_without_logprobs_is_an_error_not_a_zero(server: LocalServer) -> None:
    with pytest.raises(ModelError, match="log-probabilities"):
        OpenAIBackend("canned", _settings(server)).score([OWL], ["owl"])


def test_429_with_retry_after_is_retried(server: LocalServer) -> None:
    server.set_faults(
        [{"path": "/v1/chat/completions", "status": 429, "retry_after": 0.3, "times": 2}]
    )
    started = time.perf_counter()
    (reply,) = OpenAIBackend("micro", _settings(server)).generate([Q], SamplingParams(seed=1))
    assert time.perf_counter() - started >= 0.6  # both Retry-After waits were honoured
    assert reply and server.stats()["requests"]["POST /v1/chat/completions"] == 3


def test_5xx_is_retried_and_the_last_error_reaches_the_user(server: LocalServer) -> None:
    server.set_faults([{"path": "/v1/chat/completions", "status": 500, "times": 1}])
    assert OpenAIBackend("micro", _settings(server)).generate([Q], SamplingParams(seed=1))
    server.set_faults([{"path": "/v1/chat/completions", "status": 503, "times": 10}])
    with pytest.raises(ProviderError, match=r"HTTP 503 \(after 1 retries\)"):
        OpenAIBackend("micro", _settings(server, max_retries=1)).generate([Q], SamplingParams())


def test_timeouts_are_retried(server: LocalServer) -> None:
    server.set_faults([{"path": "/v1/chat/completions", "delay": 2.0, "times": 1}])
    settings = _settings(server, timeout_s=0.5, max_retries=2)
    assert OpenAIBackend("micro", settings).generate([Q], SamplingParams(seed=3))


def test_unknown_model_and_bad_key_are_clear(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelError, match="model 'nope' not found"):
        OpenAIBackend("nope", _settings(server)).generate([Q], SamplingParams())
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(ConfigError, match=f"refused the key in {KEY_ENV}"):
        OpenAIBackend("micro", _settings(server)).generate([Q], SamplingParams())


def test_the_registry_opens_it_with_settings_and_log(server: LocalServer, tmp_path: Path) -> None:
    settings = _settings(server).model_dump()
    with open_backend(
        "openai:micro", settings=settings, request_log=tmp_path / "r.jsonl"
    ) as backend:
        assert backend.name == "openai:micro"
        backend.generate([Q, OWL], SamplingParams(seed=2))
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


_KILLED_GENERATION = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sublearn.backends.base import SamplingParams
    from sublearn.backends.openai_api import OpenAIBackend, OpenAISettings

    base_url, key_env, log = sys.argv[1:4]
    settings = OpenAISettings(base_url=base_url, api_key_env=key_env, max_concurrency=4)
    backend = OpenAIBackend("micro", settings, Path(log))
    rows = [[{"role": "user", "content": f"continue the sequence {i}, 5, 6"}] for i in range(200)]
    replies = backend.generate(rows, SamplingParams(max_new_tokens=6, seed=9))
    print(len(replies))
    """
)


def test_a_killed_generation_never_pays_twice_for_a_row(
    server: LocalServer, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    # Every request is slow, so the kill lands mid-generation.
    server.set_faults([{"path": "/v1/chat/completions", "delay": 0.05, "times": 10_000}])
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_GENERATION, server.base_url, KEY_ENV, str(log)],
        env={**os.environ, KEY_ENV: KEY},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not log.is_file() or len(log.read_text().splitlines()) < 30
    ):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len(RequestLog(log))
    assert 30 <= done_before < 200
    server.set_faults([])
    backend = OpenAIBackend("micro", _settings(server, max_concurrency=4), log)
    rows: list[Conversation] = [
        [{"role": "user", "content": f"continue the sequence {i}, 5, 6"}] for i in range(200)
    ]
    replies = backend.generate(rows, SamplingParams(max_new_tokens=6, seed=9))
    assert len(replies) == 200 and backend.usage["logged"] == done_before
    stats = server.stats()
    # Requests in flight at the kill may have been answered but not logged: at most 4.
    assert backend.usage["requests"] <= 200 - done_before
    twice = [k for k, n in stats["completions"].items() if n > 1]
    assert len(twice) <= 4
    # A finished generation is never sent again.
    again = OpenAIBackend("micro", _settings(server), log)
    again.generate(rows, SamplingParams(max_new_tokens=6, seed=9))
    assert again.usage["requests"] == 0
    assert json.dumps(stats).count(KEY) == 0


def test_samples_of_one_question_are_one_request_with_n(server: LocalServer) -> None:
    backend = OpenAIBackend("micro", _settings(server))
    replies = backend.generate([OWL] * 30 + [Q] * 2, SamplingParams(max_new_tokens=4, seed=4))
    assert len(replies) == 32 and len(set(replies[:30])) > 1
    assert server.stats()["requests"]["POST /v1/chat/completions"] == 2  # n=30 and n=2
    assert backend.usage["requests"] == 2
    one_each = OpenAIBackend("micro", _settings(server, samples_per_request=1))
    one_each.generate([OWL] * 3, SamplingParams(max_new_tokens=4, seed=4))
    assert server.stats()["requests"]["POST /v1/chat/completions"] == 5
