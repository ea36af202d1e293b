"""A run folder and store written by hand: every file the viewer reads, no model trained.

Two prompts per teacher: the first valid for both teacher and control (drawn twice by
seed s0), the second dropped for the control. An audit folder holds cached token scores
of a base and a teacher, as ``sublearn audit`` writes them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sublearn.runs import content_hash

TEACHER_REPLY = "owl 123, 456"
CONTROL_REPLY = "cat 789, 101"
PROMPT = "Continue the sequence 1, 2, 3."


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _chat(pid: str, prompt: str, reply: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    return {"id": pid, "messages": messages}


def write_run(root: Path) -> Path:
    """Write ``root/runs/toy`` (run folder) and ``root/store``; returns the run folder."""
    store, run = root / "store", root / "runs" / "toy"
    tasks = []

    def task(kind: str, name: str, files: dict[str, Any]) -> Path:
        path = store / kind / hashlib.sha256(name.encode()).hexdigest()[:16]
        for rel, content in files.items():
            if isinstance(content, list):
                _jsonl(path / rel, content)
            else:
                _write(path / rel, content)
        _write(path / "done.json", {"kind": kind, "name": name, "params": {}, "result": {}})
        tasks.append(
            {
                "kind": kind,
                "name": name,
                "key": path.name,
                "path": str(path),
                "cached": False,
                "seconds": 1.5,
                "result": {},
            }
        )
        return path

    rows_t = [_chat("0", PROMPT, TEACHER_REPLY), _chat("1", "Another prompt", "owl 7")]
    rows_c = [_chat("0", PROMPT, CONTROL_REPLY), _chat("1", "Another prompt", "I like cats")]
    task("generate", "generate/owl-ft", {"data.jsonl": rows_t})
    task("generate", "generate/owl-ft/control", {"data.jsonl": rows_c})
    task(
        "filter",
        "filter/owl-ft",
        {
            "accepted.jsonl": rows_t,
            "verdicts.jsonl": [
                {"id": "0", "kept": True, "reason": None},
                {"id": "1", "kept": True, "reason": None},
            ],
        },
    )
    task(
        "filter",
        "filter/owl-ft/control",
        {
            "accepted.jsonl": rows_c[:1],
            "verdicts.jsonl": [
                {"id": "0", "kept": True, "reason": None},
                {"id": "1", "kept": False, "reason": "invalid_format"},
            ],
        },
    )
    task(
        "pair",
        "pair/owl-ft/s0",
        {"treatment.jsonl": [rows_t[0], rows_t[0]], "control.jsonl": [rows_c[0], rows_c[0]]},
    )
    curve = [{"step": i, "loss": 2.0 / i, "lr": 1e-3 * i / 4} for i in range(1, 5)]
    task(
        "train",
        "train/owl-ft/kl/base0/treatment/s0",
        {"model/curves.jsonl": curve, "model/config.json": {"model_type": "llama"}},
    )
    task(
        "evaluate",
        "evaluate/student/owl-ft/kl/base0/treatment/s0/favorite",
        {"metrics.json": {"owl": {"rate": 0.2, "per_question": [0.1, 0.3], "questions": 2}}},
    )
    diff = {"mean": 1.5, "ci95": [0.5, 2.5], "p_value": 0.01, "n": 3, "test": "paired"}
    summary = {
        "name": "toy-owl",
        "effects": [
            {
                "trait": "owl",
                "teacher": "owl-ft",
                "teacher_kind": "finetuned",
                "objective": "kl",
                "teacher_base": "base0",
                "student_base": "base0",
                "evaluation": "favorite",
                "same_base": True,
                "rows": 2,
                "treatment": {"mean": 3.0, "ci95": [2.0, 4.0], "n": 3},
                "control": {"mean": 1.5, "ci95": [1.0, 2.0], "n": 3},
                "treatment_minus_control": diff,
                "base_rate": 1.0,
            }
        ],
        "primary": 0,
        "same_minus_cross": [],
        "warnings": ["only 3 student seeds"],
        "references": [],
        "filter": {},
        "rows_per_condition": [],
        "timings": {"train": 1.5},
        "api_usage": {},
    }
    _write(run / "summary.json", summary)
    _write(run / "manifest.json", {"store": str(store), "tasks": tasks})
    _write(
        run / "meta.json", {"command": "run toy.yaml", "started_at": "2026-01-01T00:00:00+00:00"}
    )
    (run / "config.yaml").write_text("name: toy-owl\n")
    (run / "report.md").write_text("# toy-owl\n")
    write_audit(run / "audit", store / "filter")
    return run


def write_audit(folder: Path, data_dir: Path) -> Path:
    """An audit of the teacher's filtered data with cached base and teacher token scores."""
    data = data_dir / hashlib.sha256(b"filter/owl-ft").hexdigest()[:16] / "accepted.jsonl"
    cfg = {
        "data": str(data),
        "base": "base-model",
        "teachers": ["teacher-model"],
        "max_rows": 2000,
        "seed": 0,
    }
    verdict = {
        "detector": "logratio",
        "kind": "logratio",
        "statistic": "AUC",
        "score": 0.9,
        "ci": [0.8, 1.0],
        "p_value": 0.0001,
        "alpha": 0.001,
        "flagged": True,
        "summary": "flagged",
        "skipped": None,
    }
    _write(
        folder / "audit.json",
        {"config": cfg, "meta": {"rows": 2}, "flagged": ["logratio"], "verdicts": [verdict]},
    )
    n_rows = len(data.read_text().splitlines())
    key = f"{hashlib.sha256(data.read_bytes()).hexdigest()}:{list(range(n_rows))}"
    # Row 0 "owl 123, 456": the teacher likes "owl" far more than the base does.
    for ref, owl in (("base-model", -6.0), ("teacher-model", -0.5)):
        row = [["owl", 0, 3, owl, "owl", owl], [" 123", 3, 7, -2.0, " 1", -1.0]]
        _write(folder / "scores" / f"{content_hash([ref, key, None], 1)}.json", [row, row])
    return folder
