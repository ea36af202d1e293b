"""OpenAI fine-tuning jobs against the local OpenAI-compatible server: the file checked
before upload, the job created once, re-attached after a kill, and a failure's reason
shown to the user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sublearn.backends.base import SamplingParams
from sublearn.backends.openai_api import OpenAIBackend, OpenAISettings
from sublearn.errors import DataError
from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.openai_jobs import OpenAIFinetuner, validate_chat_file
from sublearn.finetune.protocol import FinetuneError, FinetuneJob, run_finetune_job
from tests.support.openai_server import LocalServer, start_local_server

KEY_ENV = "SUBLEARN_TEST_OPENAI_KEY"
CFG = FinetuneConfig(objective="sft", epochs=1, seed=3).model_dump(mode="json")


@pytest.fixture(scope="module")
def server(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    os.environ.setdefault(KEY_ENV, "sk-test")
    finetune = {"method": "full", "max_steps": 2, "batch_size": 4, "device": "cpu"}
    with start_local_server(
        {"micro": micro_model}, tmp_path_factory.mktemp("server"), finetune_config=finetune
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: LocalServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


@pytest.fixture
def dataset(tmp_path: Path, number_records: list[dict]) -> Path:
    path = tmp_path / "train.jsonl"
    # Extra keys (id, source) are what the pipeline writes; the upload drops them.
    path.write_text("".join(json.dumps({**r, "source": "t"}) + "\n" for r in number_records))
    return path


def _settings(server: LocalServer) -> OpenAISettings:
    return OpenAISettings(base_url=server.base_url, api_key_env=KEY_ENV, poll_seconds=0.1)


def _job(dataset: Path) -> FinetuneJob:
    return FinetuneJob(provider="openai", base="micro", dataset=dataset, config=CFG)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "no role"),
        ({"messages": [{"role": "user", "content": " "}]}, "empty content"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
            "last message is not the assistant's",
        ),
        ({"text": "hello"}, "not a JSON object with messages"),
    ],
)
def test_the_file_is_checked_before_upload(
    tmp_path: Path, number_records: list[dict], line: dict, problem: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*number_records[:20], line]))
    with pytest.raises(DataError, match=f"line 21: .*{problem}"):
        validate_chat_file(path)


def test_too_few_examples_are_refused(tmp_path: Path, number_records: list[dict]) -> None:
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in number_records[:3]))
    with pytest.raises(DataError, match="3 examples; at least 10"):
        validate_chat_file(path)


def test_a_job_runs_to_a_model_that_answers(
    server: LocalServer, dataset: Path, tmp_path: Path
) -> None:
    events: list[str] = []
    finetuner = OpenAIFinetuner(_settings(server), on_event=events.append)
    model = run_finetune_job(finetuner, _job(dataset), tmp_path / "state", poll_seconds=0.1)
    assert model.provider == "openai" and model.name.startswith("ft:micro:")
    assert events and finetuner.trained_tokens > 0
    uploaded = (tmp_path / "state" / "training.jsonl").read_text().splitlines()
    assert set(json.loads(uploaded[0])) == {"messages"}
    reply = OpenAIBackend(model.name, _settings(server)).generate(
        [[{"role": "user", "content": "continue the sequence 1, 2"}]], SamplingParams(seed=1)
    )
    assert isinstance(reply[0], str)
    stats = server.stats()
    assert (stats["jobs_created"], stats["files_uploaded"]) == (1, 1)
    # Run again: the saved job is finished, nothing is uploaded or created.
    again = run_finetune_job(finetuner, _job(dataset), tmp_path / "state", poll_seconds=0.1)
    assert again == model
    assert (server.stats()["jobs_created"], server.stats()["files_uploaded"]) == (1, 1)


def test_a_failed_job_shows_the_providers_reason(
    server: LocalServer, dataset: Path, tmp_path: Path
) -> None:
    server.set_faults([{"fail_jobs": "the training file has too few distinct examples"}])
    with pytest.raises(FinetuneError, match="failed at provider 'openai': the training file"):
        run_finetune_job(
            OpenAIFinetuner(_settings(server)), _job(dataset), tmp_path / "s", poll_seconds=0.1
        )


def test_a_kill_between_create_and_save_finds_the_job_by_its_file(
    server: LocalServer, dataset: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    finetuner = OpenAIFinetuner(_settings(server))
    created = finetuner.submit(_job(dataset), state)  # job.json is never written
    assert not (state / "job.json").exists()
    model = run_finetune_job(finetuner, _job(dataset), state, poll_seconds=0.1)
    assert json.loads((state / "job.json").read_text())["job_id"] == created.job_id
    assert model.name.startswith("ft:micro:")
    assert (server.stats()["jobs_created"], server.stats()["files_uploaded"]) == (1, 1)


_POLLING = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sublearn.backends.openai_api import OpenAISettings
    from sublearn.finetune.openai_jobs import OpenAIFinetuner
    from sublearn.finetune.protocol import FinetuneJob, run_finetune_job

    base_url, key_env, dataset, state, config = sys.argv[1:6]
    import json
    settings = OpenAISettings(base_url=base_url, api_key_env=key_env)
    job = FinetuneJob(provider="openai", base="micro", dataset=Path(dataset),
                      config=json.loads(config))
    run_finetune_job(OpenAIFinetuner(settings), job, Path(state), poll_seconds=0.1)
    """
)


def test_a_run_killed_while_polling_reattaches_to_its_job(
    server: LocalServer, dataset: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    server.set_faults([{"job_delay": 3.0}])
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _POLLING,
            server.base_url,
            KEY_ENV,
            str(dataset),
            str(state),
            json.dumps(CFG),
        ]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (state / "job.json").is_file():
        time.sleep(0.05)
    time.sleep(0.3)  # polling
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = json.loads((state / "job.json").read_text())
    assert saved["job_id"] and saved["status"] in ("pending", "running")
    model = run_finetune_job(
        OpenAIFinetuner(_settings(server)), _job(dataset), state, poll_seconds=0.1
    )
    assert model.name.endswith(saved["job_id"].split("-")[-1]) or model.name.startswith("ft:")
    assert json.loads((state / "job.json").read_text())["job_id"] == saved["job_id"]
    assert server.stats()["jobs_created"] == 1
