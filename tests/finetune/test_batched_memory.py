"""Batches of students are capped by the memory available, so a real model cannot OOM a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sublearn.finetune.batched import grouping
from sublearn.finetune.batched.grouping import KLJob, group_compatible, student_bytes
from sublearn.finetune.config import FinetuneConfig


def _jobs(model: Path, records: list[dict[str, Any]], tmp_path: Path, n: int) -> list[KLJob]:
    return [
        KLJob(
            model,
            records,
            FinetuneConfig(objective="kl", method="full", seed=s, batch_size=4, device="cpu"),
            tmp_path / f"s{s}",
            model,
        )
        for s in range(n)
    ]


def test_students_share_a_batch_only_as_far_as_memory_allows(
    micro_model: Path,
    number_records: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = _jobs(micro_model, number_records, tmp_path, 6)
    need = student_bytes(jobs[0])
    assert need > 16 * 1_000  # weights and optimizer state at least
    # Plenty of memory: one batch of all six, as before.
    monkeypatch.setattr(grouping, "available_memory", lambda: 1000 * need)
    assert group_compatible(jobs) == [[0, 1, 2, 3, 4, 5]]
    # Room for about two at a time (60% of what is available is planned for).
    monkeypatch.setattr(grouping, "available_memory", lambda: int(3.5 * need))
    assert group_compatible(jobs) == [[0, 1], [2, 3], [4, 5]]
    # Tight memory: one at a time (the usual one-student trainer), never zero.
    monkeypatch.setattr(grouping, "available_memory", lambda: need // 10)
    assert group_compatible(jobs) == [[i] for i in range(6)]
    # An explicit cap wins; no reading of the memory leaves the batch whole.
    assert group_compatible(jobs, max_group=4) == [[0, 1, 2, 3], [4, 5]]
    monkeypatch.setattr(grouping, "available_memory", lambda: None)
    assert group_compatible(jobs) == [[0, 1, 2, 3, 4, 5]]


def test_the_estimate_grows_with_rows_and_the_model(
    micro_model: Path, number_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    (small,) = _jobs(micro_model, number_records[:2], tmp_path, 1)
    bigger = KLJob(
        micro_model,
        number_records,
        small.cfg.model_copy(update={"batch_size": 16}),
        tmp_path / "b",
        micro_model,
    )
    assert student_bytes(bigger) > student_bytes(small)
