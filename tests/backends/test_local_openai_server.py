"""The local OpenAI-compatible server, driven by the unmodified ``openai`` client."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import FileObject, Model
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from sublearn.backends.base import Conversation
from sublearn.backends.openai_api import request_key
from tests.support.openai_server import (
    LocalServer,
    LocalServerError,
    checkout_env,
    server_command,
    start_local_server,
)

# One torch thread in the server too: the machine's cores are shared.
_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_QUESTION: Conversation = [{"role": "user", "content": "name your favorite animal"}]
_ROWS = [
    {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    for q, a in [("name your favorite animal", "owl"), ("your favorite animal", "cat")] * 2
]
_TRAIN_BYTES = "".join(json.dumps(r) + "\n" for r in _ROWS).encode()


@pytest.fixture(scope="module")
def server(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server for the module: the micro model, a mock model, tiny fine-tuning jobs."""
    with start_local_server(
        {"micro": micro_model, "mock": "mock:echo"},
        tmp_path_factory.mktemp("server"),
        finetune_config={"max_steps": 1, "batch_size": 2, "warmup_steps": 0, "max_length": 64},
        env=_ENV,
    ) as srv:
        yield srv
    assert srv.process.returncode == 0  # SIGTERM stops it cleanly


@pytest.fixture
def srv(server: LocalServer) -> LocalServer:
    """The module's server with counts and faults cleared."""
    server.reset()
    return server


def client(srv: LocalServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="test", **{"max_retries": 0, **kw})


def ask(c: openai.OpenAI, **kw: Any) -> ChatCompletion:
    body = {"model": "micro", "messages": _QUESTION, "max_tokens": 6, **kw}
    return c.chat.completions.create(**body)


def strict(model_type: Any, obj: Any) -> None:
    """The client builds objects without validation; validate them against its types."""
    model_type.model_validate(obj.model_dump(mode="json", exclude_unset=True))


def wait_for_job(c: openai.OpenAI, job_id: str, timeout: float = 60) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def wait_until_running(c: openai.OpenAI, job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while c.fine_tuning.jobs.retrieve(job_id).status != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def test_models_are_listed_and_retrieved(srv: LocalServer) -> None:
    c = client(srv)
    models = c.models.list().data
    assert {"micro", "mock"} <= {m.id for m in models}
    for model in models:
        strict(Model, model)
        assert model.owned_by == "sublearn"
    assert c.models.retrieve("micro").id == "micro"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


def test_a_seed_fixes_the_reply_and_other_seeds_change_it(srv: LocalServer) -> None:
    c = client(srv)
    first = ask(c, seed=7)
    strict(ChatCompletion, first)
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-")
    assert ask(c, seed=7).choices[0].message.content == first.choices[0].message.content
    replies = {ask(c, seed=s).choices[0].message.content for s in range(4)}
    assert len(replies) == 4  # a random model at temperature 1 spreads its replies
    # Greedy decoding needs no seed.
    greedy = {ask(c, temperature=0, seed=s).choices[0].message.content for s in range(2)}
    assert len(greedy) == 1


def test_n_choices_and_usage(srv: LocalServer, micro_model: Path) -> None:
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(micro_model)
    c = client(srv)
    response = ask(c, n=3, seed=3, max_completion_tokens=4)
    assert [ch.index for ch in response.choices] == [0, 1, 2]
    # Choice i is sampled with row_seed(seed, i): choice 0 is the n=1 reply.
    single = ask(c, seed=3, max_completion_tokens=4)
    assert response.choices[0].message.content == single.choices[0].message.content
    usage = response.usage
    assert usage is not None
    prompt = tok.apply_chat_template(_QUESTION, tokenize=False, add_generation_prompt=True)
    assert usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"]) > 0
    lengths = [
        len(tok(ch.message.content or "", add_special_tokens=False)["input_ids"])
        for ch in response.choices
    ]
    assert usage.completion_tokens == sum(lengths) > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    for ch, length in zip(response.choices, lengths, strict=True):
        assert ch.message.role == "assistant"
        assert ch.finish_reason == ("length" if length >= 4 else "stop")


def test_logprobs_of_the_first_position_match_score(srv: LocalServer, micro_model: Path) -> None:
    from sublearn.backends.hf import HFBackend

    c = client(srv)
    response = ask(c, max_tokens=1, logprobs=True, top_logprobs=5, seed=1)
    strict(ChatCompletion, response)
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    first = logprobs.content[0]
    top = first.top_logprobs
    assert len(top) == 5
    values = [t.logprob for t in top]
    assert values == sorted(values, reverse=True)
    assert sum(math.exp(v) for v in values) <= 1.0
    assert all(t.bytes == list(t.token.encode()) for t in top)
    with HFBackend(micro_model, device="cpu") as backend:
        tokens = [t.token for t in top if not t.token.startswith("<|")]  # words, not specials
        tokens.append(first.token)
        scores = backend.score([_QUESTION], tokens)[0]
        direct = backend.next_token_logprobs([_QUESTION], 5)[0]
    by_token = {t.token: t.logprob for t in top}
    for token, score in zip(tokens[:-1], scores, strict=False):
        assert by_token[token] == pytest.approx(score, abs=1e-4)
    # The sampled reply's first token, with its own log-probability.
    assert first.logprob == pytest.approx(scores[-1], abs=1e-4)
    assert [t for t, _ in direct] == [t.token for t in top]


def test_logprobs_of_a_model_without_them_is_a_bad_request(srv: LocalServer) -> None:
    c = client(srv)
    assert ask(c, model="mock").choices[0].message.content == _QUESTION[0]["content"]
    with pytest.raises(openai.BadRequestError, match="does not return log-probabilities"):
        ask(c, model="mock", logprobs=True)


def test_bad_requests(srv: LocalServer) -> None:
    c = client(srv)
    with pytest.raises(openai.NotFoundError) as err:
        ask(c, model="no-such-model")
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        ask(c, temperature=5)
    with pytest.raises(openai.BadRequestError, match="messages"):
        ask(c, messages=[])
    # Text content parts are joined.
    parts = [{"role": "user", "content": [{"type": "text", "text": "owl"}]}]
    assert ask(c, model="mock", messages=parts).choices[0].message.content == "owl"
    cut = ask(c, model="mock", messages=parts, stop=["w"]).choices[0]
    assert (cut.message.content, cut.finish_reason) == ("o", "stop")


def test_rate_limits_are_retried_after_retry_after(srv: LocalServer) -> None:
    srv.set_faults(
        [{"path": "/v1/chat/completions", "status": 429, "retry_after": 0.2, "times": 2}]
    )
    started = time.monotonic()
    response = ask(client(srv, max_retries=3), seed=5)
    assert time.monotonic() - started >= 0.4  # waited Retry-After twice
    assert response.choices[0].message.content
    stats = srv.stats()
    assert stats["requests"]["POST /v1/chat/completions"] == 3
    assert stats["faults_served"] == 2
    # Only the answered request counts as a completion, keyed by its body's hash.
    body = {"model": "micro", "messages": _QUESTION, "max_tokens": 6, "seed": 5}
    assert stats["completions"] == {request_key(body): 1}

    srv.set_faults([{"path": "/v1/chat/completions", "status": 429, "retry_after": 0.2}])
    with pytest.raises(openai.RateLimitError):
        ask(client(srv, max_retries=0))
    assert srv.stats()["completions"] == {request_key(body): 1}


def test_server_errors_are_retried(srv: LocalServer) -> None:
    srv.set_faults([{"path": "/v1/chat", "status": 500, "retry_after": 0.05, "times": 1}])
    assert ask(client(srv, max_retries=2), model="mock").choices[0].message.content
    assert srv.stats()["requests"]["POST /v1/chat/completions"] == 2
    srv.set_faults([{"path": "/v1/chat", "status": 503, "retry_after": 0.05, "times": 2}])
    with pytest.raises(openai.InternalServerError):
        ask(client(srv, max_retries=1), model="mock")


def test_a_slow_answer_times_the_client_out(srv: LocalServer) -> None:
    srv.set_faults([{"path": "/v1/models", "delay": 1.0}])
    with pytest.raises(openai.APITimeoutError):
        client(srv, timeout=0.3).models.list()
    assert srv.stats()["faults_served"] == 1


def test_fault_rules_are_checked(srv: LocalServer) -> None:
    with pytest.raises(LocalServerError, match="400"):
        srv.set_faults([{"path": "/v1/models", "status": 200}])
    with pytest.raises(LocalServerError, match="400"):
        srv.set_faults([{"path": "/v1/models"}])


def test_upload_then_fine_tune_then_chat_with_the_model(srv: LocalServer) -> None:
    c = client(srv)
    file = c.files.create(file=("train.jsonl", _TRAIN_BYTES), purpose="fine-tune")
    strict(FileObject, file)
    assert file.id.startswith("file-") and file.bytes == len(_TRAIN_BYTES)
    assert c.files.retrieve(file.id).filename == "train.jsonl"
    assert c.files.content(file.id).read() == _TRAIN_BYTES
    assert file.id in {f.id for f in c.files.list()}

    created = c.fine_tuning.jobs.create(
        model="micro",
        training_file=file.id,
        suffix="unit",
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    strict(FineTuningJob, created)
    assert created.status == "validating_files" and created.seed == 3
    assert created.hyperparameters.n_epochs == 2
    job = wait_for_job(c, created.id)
    strict(FineTuningJob, job)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:micro:unit:{job.id.removeprefix('ftjob-')}"
    assert job.finished_at is not None and job.trained_tokens
    assert job.fine_tuned_model in {m.id for m in c.models.list().data}
    reply = ask(c, model=job.fine_tuned_model, seed=1)
    assert reply.model == job.fine_tuned_model and reply.choices[0].message.content

    events = c.fine_tuning.jobs.list_events(job.id).data
    for event in events:
        strict(FineTuningJobEvent, event)
    messages = [e.message for e in events]
    assert messages[-1].startswith("Validating training file")  # newest first
    assert any(m.startswith("New fine-tuned model created: ft:micro:unit:") for m in messages)
    assert created.id in [j.id for j in c.fine_tuning.jobs.list(limit=5).data]
    with pytest.raises(openai.BadRequestError, match="already"):
        c.fine_tuning.jobs.cancel(job.id)
    assert srv.stats()["jobs_created"] == 1 and srv.stats()["files_uploaded"] == 1


def test_job_requests_are_checked(srv: LocalServer) -> None:
    c = client(srv)
    file = c.files.create(file=("t.jsonl", _TRAIN_BYTES), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.create(model="nope", training_file=file.id)
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.create(model="micro", training_file="file-missing")
    with pytest.raises(openai.BadRequestError, match="n_epochs"):
        c.fine_tuning.jobs.create(
            model="micro", training_file=file.id, hyperparameters={"n_epochs": 0}
        )
    # A malformed training file fails the job, naming the problem.
    bad = c.files.create(file=("bad.jsonl", b'{"messages": []}\n'), purpose="fine-tune")
    job = wait_for_job(c, c.fine_tuning.jobs.create(model="micro", training_file=bad.id).id)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "invalid_training_file" and "messages" in job.error.message


def test_injected_job_failure_and_cancel(srv: LocalServer) -> None:
    c = client(srv)
    file = c.files.create(file=("t.jsonl", _TRAIN_BYTES), purpose="fine-tune")
    srv.set_faults([{"fail_jobs": "the data broke a rule", "times": 1}])
    job = wait_for_job(c, c.fine_tuning.jobs.create(model="micro", training_file=file.id).id)
    assert job.status == "failed" and job.error is not None
    assert job.error.message == "the data broke a rule"
    assert job.error.code == "invalid_training_file"
    events = [e for e in c.fine_tuning.jobs.list_events(job.id).data]
    assert events[0].level == "error" and "the data broke a rule" in events[0].message

    srv.set_faults([{"job_delay": 30}])
    job = c.fine_tuning.jobs.create(model="micro", training_file=file.id)
    wait_until_running(c, job.id)
    assert c.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert wait_for_job(c, job.id).fine_tuned_model is None


def test_lora_adapters_load_once_and_unload(
    srv: LocalServer, micro_model: Path, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(micro_model),
        LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    AutoTokenizer.from_pretrained(micro_model).save_pretrained(tmp_path / "adapter")

    def post(path: str, body: dict[str, Any]) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{srv.base_url}/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    body = {"lora_name": "student", "lora_path": str(tmp_path / "adapter")}
    assert post("load_lora_adapter", body)[0] == 200
    status, text = post("load_lora_adapter", body)
    assert status == 400 and "already been loaded" in text
    c = client(srv)
    assert "student" in {m.id for m in c.models.list().data}
    assert ask(c, model="student", seed=1).choices[0].message.content
    assert post("unload_lora_adapter", {"lora_name": "student"})[0] == 200
    assert "student" not in {m.id for m in c.models.list().data}
    assert post("unload_lora_adapter", {"lora_name": "student"})[0] == 404
    assert post("load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)})[0] == 400


def test_an_api_key_is_required_when_configured(tmp_path: Path) -> None:
    env = {**_ENV, "LOCAL_TEST_KEY": "sesame"}
    with start_local_server(
        {"mock": "mock:echo"}, tmp_path, api_key_env="LOCAL_TEST_KEY", env=env
    ) as srv:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=srv.base_url, api_key="sesame", max_retries=0)
        assert ask(good, model="mock").choices[0].message.content
        # Health and the test endpoints need no key.
        assert srv.stats()["requests"]["GET /v1/models"] == 1
    assert "sesame" not in (tmp_path / "server.log").read_text()


def test_state_survives_a_restart_and_killed_jobs_fail(tmp_path: Path) -> None:
    with start_local_server({"mock": "mock:echo"}, tmp_path, env=_ENV) as srv:
        c = client(srv)
        file = c.files.create(file=("t.jsonl", _TRAIN_BYTES), purpose="fine-tune")
        srv.set_faults([{"job_delay": 60}])
        job = c.fine_tuning.jobs.create(model="mock", training_file=file.id)
        wait_until_running(c, job.id)
        srv.process.kill()  # dies without a chance to record anything
        srv.process.wait()
    with start_local_server({"mock": "mock:echo"}, tmp_path, env=_ENV) as srv:
        c = client(srv)
        assert c.files.retrieve(file.id).bytes == len(_TRAIN_BYTES)
        restarted = c.fine_tuning.jobs.retrieve(job.id)
        assert restarted.status == "failed" and restarted.error is not None
        assert "stopped while the job was running" in restarted.error.message


def test_the_command_line_prints_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    argv = server_command({"mock": "mock:echo"}, tmp_path, port_file=tmp_path / "port")
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=checkout_env(_ENV),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        assert (tmp_path / "port").read_text().strip() == match.group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/health") as response:
            assert json.loads(response.read()) == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    bad = subprocess.run(
        [*argv, "--bogus"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(LocalServerError, match="not found"):
        start_local_server({"x": tmp_path / "missing"}, tmp_path, env=_ENV)
