"""A resumable store of judgements: one JSONL line per answered request.

Each line is ``{"key", "score", "probability", "label", "raw"}``, appended and synced to
disk as soon as the judgement exists (a durable :class:`~sublearn.jsonl.AppendLog`), so a
killed run loses at most the requests in flight and a rerun asks the judge only about
the rest. A torn last line (a kill mid-write) or any other unreadable line is skipped on
loading.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sublearn.jsonl import AppendLog
from sublearn.judges.protocol import Judgement
from sublearn.runs import content_hash


def judgement_key(
    judge: str, template: str, target: str | None, question: str, answer: str, *extra: Any
) -> str:
    """Identity of one judging request: a hash of everything the verdict depends on.

    Args:
        judge: the judge's name (which model, or which rules).
        template: the rubric's template (a reworded rubric is a new question).
        target: the rubric's target, if any.
        question: the request's question.
        answer: the request's answer.
        *extra: anything else the verdict depends on (e.g. how it is read off the model).
    """
    return content_hash(judge, template, target, question, answer, *extra, length=32)


class JudgementCache:
    """Judgements by request key, in memory and (when given a path) in a JSONL file."""

    def __init__(self, path: Path | None = None) -> None:
        """Open the cache, reading what an earlier run stored at ``path``.

        Args:
            path: the JSONL file (created on the first write); None keeps judgements in
                memory only.
        """
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, Judgement] = {}
        self._log = None if path is None else AppendLog(path, ensure_ascii=False)
        if self._log is not None:
            for value in self._log.read():
                entry = _decode(value)
                if entry is not None:
                    self._entries[entry[0]] = entry[1]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Judgement | None:
        """The stored judgement of a request, or None."""
        return self._entries.get(key)

    def add(self, key: str, judgement: Judgement) -> None:
        """Store one judgement, synced to disk before returning."""
        with self._lock:
            self._entries[key] = judgement
            if self._log is None:
                return
            self._log.append(
                {
                    "key": key,
                    "score": judgement.score,
                    "probability": judgement.probability,
                    "label": judgement.label,
                    "raw": judgement.raw,
                }
            )


def _decode(entry: Any) -> tuple[str, Judgement] | None:
    try:
        key = entry["key"]
        judgement = Judgement(
            score=_optional_float(entry.get("score")),
            probability=_optional_float(entry.get("probability")),
            label=entry.get("label"),
            raw=str(entry.get("raw", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a torn or foreign line: the request is judged again
    if not isinstance(key, str) or not (
        judgement.label is None or isinstance(judgement.label, str)
    ):
        return None
    return key, judgement


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)
