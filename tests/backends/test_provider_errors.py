"""Every failure of a remote model is one sublearn error that names the model, the URL and
what to check, survives pickling, and leaves the answered requests logged; a server
that ignores ``n`` gets one request per sample; plan-time probes of a server."""

from __future__ import annotations

import pickle
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.openai_api import (
    OpenAIBackend,
    OpenAISettings,
    RequestLog,
)
from sublearn.backends.probe import (
    clear_cache,
    honours_n,
    returns_logprobs,
    served_models,
    unknown_model,
)
from sublearn.engine.executors import TaskError, portable
from sublearn.errors import ModelError, ProviderError
from tests.support.llamalike_server import LlamaLikeServer

KEY_ENV = "SUBLEARN_TEST_PROVIDER_KEY"
ROWS: list[Conversation] = [[{"role": "user", "content": f"row {i}"}] for i in range(12)]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-anything")
    clear_cache()


def _settings(base_url: str, **extra: object) -> OpenAISettings:
    fields = {"base_url": base_url, "api_key_env": KEY_ENV, "max_retries": 0, "timeout_s": 5}
    return OpenAISettings.model_validate(fields | extra)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _roundtrip(err: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(err))


def test_a_wrong_port_is_one_clear_picklable_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    backend = OpenAIBackend("smollm2", _settings(url, max_retries=1))
    with pytest.raises(ProviderError) as caught:
        backend.generate(ROWS[:3], SamplingParams())
    message = str(caught.value)
    assert "openai:smollm2" in message and url in message and "Connection refused" in message
    assert "after 1 retries" in message and "providers.openai.base_url" in message
    copy = _roundtrip(caught.value)
    assert isinstance(copy, ProviderError) and str(copy) == message
    assert (copy.model, copy.url) == ("openai:smollm2", url)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url", ["localhost:8000/v1", "htp://127.0.0.1:8000/v1", "http://[::1/v1", "http://h:80x/v1"]
)
def test_a_malformed_base_url_is_refused_with_the_form_to_write(url: str) -> None:
    with pytest.raises(ValidationError, match="http://HOST:PORT/v1"):
        OpenAISettings(base_url=url)


@pytest.mark.parametrize(("status", "words"), [(500, "HTTP 500"), (429, r"too many \(429\)")])
def test_server_errors_after_retries_name_the_status(status: int, words: str) -> None:
    with LlamaLikeServer(fail_from=0, fail_status=status) as server:
        backend = OpenAIBackend("smollm2", _settings(server.base_url, max_retries=1))
        with pytest.raises(ProviderError, match=words) as caught:
            backend.generate(ROWS[:1], SamplingParams())
        assert server.chat_requests == 2  # the first try and one retry
    assert server.base_url in str(caught.value) and "injected failure" in str(caught.value)


def test_a_reply_that_is_no_chat_completion_is_a_provider_error() -> None:
    with (
        LlamaLikeServer(malformed=True) as server,
        pytest.raises(ProviderError, match="not an OpenAI chat completion"),
    ):
        OpenAIBackend("smollm2", _settings(server.base_url)).generate(ROWS[:1], SamplingParams())


def test_the_sdks_unpicklable_errors_travel_as_task_errors() -> None:
    import openai

    err = openai.APIConnectionError(message="Connection error.", request=_request())
    with pytest.raises(TypeError):
        _roundtrip(err)  # what broke the process pool
    carried = portable(err)
    assert isinstance(carried, TaskError) and "APIConnectionError" in str(carried)
    assert str(_roundtrip(carried)) == str(carried)
    ours = ProviderError("m: down", "openai:m", "http://x/v1")
    assert portable(ours) is ours


def _request() -> Any:
    import httpx2 as httpx  # the openai client's transport

    return httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def test_a_server_stopped_mid_run_fails_fast_and_the_rerun_resends_nothing(
    tmp_path: Path,
) -> None:
    log = tmp_path / "requests.jsonl"
    port = _free_port()
    server = LlamaLikeServer(port=port).__enter__()
    settings = _settings(server.base_url, max_concurrency=2, max_retries=1)
    stopper = threading.Thread(target=lambda: (_wait_for_lines(log, 4), server.stop()))
    stopper.start()
    rows: list[Conversation] = [[{"role": "user", "content": f"q {i}"}] for i in range(120)]
    started = time.perf_counter()
    with pytest.raises(ProviderError, match="cannot reach the server"):
        OpenAIBackend("smollm2", settings, log).generate(rows, SamplingParams(seed=1))
    stopper.join()
    assert time.perf_counter() - started < 20  # not one backoff per remaining request
    answered = len(RequestLog(log))
    assert 4 <= answered < 120
    with LlamaLikeServer(port=port) as again:
        backend = OpenAIBackend("smollm2", settings, log)
        replies = backend.generate(rows, SamplingParams(seed=1))
        assert again.chat_requests == 120 - answered  # answered requests are not resent
    assert backend.usage["logged"] == answered
    assert replies[7] == "q 7 #" + str(SamplingParams(seed=1).seeds_for(120)[7])


def _wait_for_lines(path: Path, n: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.005)


def test_fewer_choices_than_n_fall_back_to_one_request_per_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owl: Conversation = [{"role": "user", "content": "favorite animal?"}]
    log = tmp_path / "requests.jsonl"
    params = SamplingParams(seed=3)
    asked = [owl] * 5 + ROWS[:1] + [owl] * 4
    seeds = params.seeds_for(len(asked))
    with LlamaLikeServer() as server:
        backend = OpenAIBackend("smollm2", _settings(server.base_url), log)
        replies = backend.generate(asked, params)
        backend.generate([owl] * 3, params)
        said = capsys.readouterr().err.splitlines()
        assert len(said) == 1 and "one request per sample" in said[0]
        # Each sample was answered with its own seed: no sample repeats another.
        assert replies == [f"{c[-1]['content']} #{s}" for c, s in zip(asked, seeds, strict=True)]
        # n=5, the lone row and n=4 were asked; the 4 + 3 missing samples went alone.
        # Then, the fallback known, 3 samples went alone at once: seeds 1 and 2 of this
        # conversation had been asked alone already (the log answered them), seed 0 not.
        assert server.chat_requests == 3 + (4 + 3) + 1
        sent = server.chat_requests
        again = OpenAIBackend("smollm2", _settings(server.base_url), log)
        assert again.generate(asked, params) == replies
        assert capsys.readouterr().err == ""  # said once per process: not again
        assert server.chat_requests == sent and again.usage["requests"] == 0


def test_probes_list_names_and_capabilities_once() -> None:
    with LlamaLikeServer(served=("smollm2",), logprobs=False) as server:
        settings = _settings(server.base_url)
        assert served_models(settings) == ["smollm2"]
        assert not returns_logprobs(settings, "smollm2")
        assert not honours_n(settings, "smollm2")
        assert not returns_logprobs(settings, "smollm2")  # cached: asked once
        assert server.chat_requests == 2
    why = unknown_model("smollm3", ["smollm2", "qwen"], "http://h/v1")
    assert why is not None and "did you mean 'smollm2'" in why
    assert unknown_model("qwen", ["smollm2", "qwen"], "http://h/v1") is None


def test_a_base_url_without_v1_says_to_check_it() -> None:
    with LlamaLikeServer() as server:
        settings = _settings(server.base_url.removesuffix("/v1"))
        assert served_models(settings) is None  # no list there: nothing to compare with
        with pytest.raises(ModelError, match="ends in /v1"):
            OpenAIBackend("smollm2", settings).generate(ROWS[:1], SamplingParams())


def test_a_server_without_a_fine_tuning_api_is_a_clear_error(tmp_path: Path) -> None:
    import json

    from sublearn.finetune.openai_jobs import OpenAIFinetuner
    from sublearn.finetune.protocol import FinetuneJob

    data = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "user", "content": "1, 2"}, {"role": "assistant", "content": "3"}]}
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(10)))
    job = FinetuneJob(
        provider="openai", base="smollm2", dataset=data, config={"epochs": 1, "max_steps": None}
    )
    with LlamaLikeServer() as server:
        tuner = OpenAIFinetuner(_settings(server.base_url))
        with pytest.raises(ModelError, match="no fine-tuning API") as caught:
            tuner.submit(job, tmp_path / "state")
    assert str(_roundtrip(caught.value)) == str(caught.value)
