"""Fine-tuning jobs: saved state, re-attachment after a kill, clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sublearn.backends.refs import ModelRef
from sublearn.errors import ModelError, PlanError, SublearnError
from sublearn.finetune.protocol import (
    FinetuneError,
    FinetuneJob,
    Finetuner,
    LocalHFFinetuner,
    run_finetune_job,
)


class Killed(BaseException):
    """A kill: not an Exception, so nothing on the way catches it."""


class FakeFinetuner:
    """A remote-style provider: jobs run for ``polls`` status calls, then end as told."""

    provider = "openai"

    def __init__(
        self, polls: int = 2, outcome: str = "succeeded", die_on_status: int | None = None
    ) -> None:
        self.submits = 0
        self.status_calls = 0
        self.polls = polls
        self.outcome = outcome
        self.die_on_status = die_on_status

    def submit(self, job: FinetuneJob, state_dir: Path) -> FinetuneJob:
        self.submits += 1
        return job.model_copy(update={"job_id": f"ftjob-{self.submits}", "status": "pending"})

    def status(self, job: FinetuneJob) -> FinetuneJob:
        self.status_calls += 1
        if self.die_on_status == self.status_calls:
            raise Killed
        if self.status_calls < self.polls:
            return job.model_copy(update={"status": "running"})
        if self.outcome == "succeeded":
            return job.model_copy(
                update={"status": "succeeded", "result_model": f"ft:{job.base}:{job.job_id}"}
            )
        return job.model_copy(update={"status": self.outcome, "error": "training file invalid"})

    def result(self, job: FinetuneJob) -> ModelRef:
        assert job.result_model is not None
        return ModelRef("openai", job.result_model)


def make_job(tmp_path: Path, **config: object) -> FinetuneJob:
    return FinetuneJob(
        provider="openai",
        base="gpt-4.1-nano",
        dataset=tmp_path / "data.jsonl",
        config={"epochs": 1, **config},
    )


def test_fake_is_a_finetuner() -> None:
    assert isinstance(FakeFinetuner(), Finetuner)
    assert isinstance(LocalHFFinetuner(Path("x")), Finetuner)


def test_runs_to_success_and_saves_every_change(tmp_path: Path) -> None:
    state = tmp_path / "state"
    seen: list[str] = []
    finetuner = FakeFinetuner(polls=3)
    ref = run_finetune_job(
        finetuner, make_job(tmp_path), state, 0, on_status=lambda j: seen.append(j.status)
    )
    assert ref == ModelRef("openai", "ft:gpt-4.1-nano:ftjob-1")
    assert seen == ["pending", "running", "succeeded"]
    saved = json.loads((state / "job.json").read_text())
    assert saved["status"] == "succeeded" and saved["job_id"] == "ftjob-1"
    assert finetuner.submits == 1


def test_killed_run_reattaches_and_submits_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = FakeFinetuner(polls=3, die_on_status=2)
    with pytest.raises(Killed):
        run_finetune_job(first, make_job(tmp_path), state, 0)
    saved = FinetuneJob.load(state)
    assert saved is not None and saved.job_id == "ftjob-1" and saved.status == "running"

    second = FakeFinetuner(polls=1)  # a new process: a fresh provider client
    ref = run_finetune_job(second, make_job(tmp_path), state, 0)
    assert second.submits == 0 and first.submits == 1
    assert ref == ModelRef("openai", "ft:gpt-4.1-nano:ftjob-1")

    third = FakeFinetuner()
    assert run_finetune_job(third, make_job(tmp_path), state, 0) == ref
    assert third.submits == 0 and third.status_calls == 0  # a finished job is not polled


def test_other_work_submits_anew_and_keeps_the_old_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(Killed):
        run_finetune_job(FakeFinetuner(die_on_status=1), make_job(tmp_path), state, 0)
    other = FakeFinetuner(polls=1)
    run_finetune_job(other, make_job(tmp_path, epochs=3), state, 0)
    assert other.submits == 1
    history = (state / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in history] == ["ftjob-1"]


def test_failed_job_raises_with_the_reason_and_a_rerun_resubmits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(FinetuneError, match=r"ftjob-1 .* failed .*training file invalid") as info:
        run_finetune_job(FakeFinetuner(outcome="failed"), make_job(tmp_path), state, 0)
    assert isinstance(info.value, SublearnError)
    assert FinetuneJob.load(state).status == "failed"  # type: ignore[union-attr]
    retry = FakeFinetuner(polls=1)
    run_finetune_job(retry, make_job(tmp_path), state, 0)
    assert retry.submits == 1


def test_cancelled_job_raises(tmp_path: Path) -> None:
    with pytest.raises(FinetuneError, match="cancelled"):
        run_finetune_job(FakeFinetuner(outcome="cancelled"), make_job(tmp_path), tmp_path, 0)


def test_wrong_provider_and_unreadable_state(tmp_path: Path) -> None:
    job = make_job(tmp_path).model_copy(update={"provider": "hf"})
    with pytest.raises(PlanError, match="cannot run on the 'openai'"):
        run_finetune_job(FakeFinetuner(), job, tmp_path, 0)
    (tmp_path / "job.json").write_text("{not json")
    with pytest.raises(PlanError, match="delete the file"):
        run_finetune_job(FakeFinetuner(), make_job(tmp_path), tmp_path, 0)


def test_same_work_ignores_progress_and_normalizes(tmp_path: Path) -> None:
    job = make_job(tmp_path, layers=(1, 2))
    done = job.model_copy(update={"job_id": "x", "status": "succeeded"})
    assert job.same_work(done)
    loaded = FinetuneJob.model_validate_json(done.model_dump_json())
    assert job.same_work(loaded)
    assert not job.same_work(make_job(tmp_path, epochs=2))
    assert FinetuneJob(provider="p", base="b", dataset=Path("d.jsonl")).dataset.is_absolute()


def test_local_hf_finetuner(micro_model: Path, number_records: list[dict], tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in number_records[:16]))
    config = {"method": "lora", "epochs": 1, "batch_size": 8, "device": "cpu"}
    job = FinetuneJob(provider="hf", base=str(micro_model), dataset=data, config=config)
    out = tmp_path / "student"
    ref = run_finetune_job(LocalHFFinetuner(out), job, tmp_path / "state", 0)
    assert ref == ModelRef("hf", str(micro_model), str(out))  # a LoRA adapter on its base
    assert (out / "train_metrics.json").is_file()
    assert FinetuneJob.load(tmp_path / "state").status == "succeeded"  # type: ignore[union-attr]

    # A finished job re-attaches without training; a vanished folder is a clear error.
    assert run_finetune_job(LocalHFFinetuner(out), job, tmp_path / "state", 0) == ref
    (out / "train_metrics.json").unlink()
    with pytest.raises(ModelError, match=r"missing or incomplete; delete the job's job.json"):
        run_finetune_job(LocalHFFinetuner(out), job, tmp_path / "state", 0)


def test_local_hf_bad_config_fails_the_job(micro_model: Path, tmp_path: Path) -> None:
    job = FinetuneJob(
        provider="hf", base=str(micro_model), dataset=tmp_path / "d.jsonl", config={"epochs": -1}
    )
    with pytest.raises(FinetuneError, match="epochs"):
        run_finetune_job(LocalHFFinetuner(tmp_path / "out"), job, tmp_path / "state", 0)
