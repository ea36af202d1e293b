"""Audits and defences on rows held in memory (a notebook's list of chat records).

Both write the rows to a JSONL file first (the detectors and defences read files, which
is also what makes their score caches work) and run exactly what ``sublearn audit`` and
``sublearn defend`` run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sublearn.errors import DataError

Rows = Iterable[Mapping[str, Any] | tuple[str, str]]
"""Chat records ``{"messages": [...]}`` (the last message the reply), or (prompt, reply)."""


def write_rows(rows: Rows, path: Path) -> Path:
    """Write rows as chat JSONL; (prompt, reply) pairs become a user and an assistant turn.

    Raises:
        DataError: a row is neither a chat record nor a (prompt, reply) pair.
    """
    lines = []
    for i, row in enumerate(rows):
        if isinstance(row, tuple) and len(row) == 2:
            record: Mapping[str, Any] = {
                "messages": [
                    {"role": "user", "content": str(row[0])},
                    {"role": "assistant", "content": str(row[1])},
                ]
            }
        elif isinstance(row, Mapping) and "messages" in row:
            record = row
        else:
            raise DataError(
                f"row {i}: expected a chat record {{'messages': [...]}} or a (prompt, reply) pair"
            )
        lines.append(json.dumps(dict(record)) + "\n")
    if not lines:
        raise DataError("no rows given")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


@dataclass
class AuditResult:
    """What an audit found.

    Attributes:
        verdicts: one per detector (see :class:`sublearn.audit.result.Verdict`).
        folder: where audit.json, audit.md, figures and token scores were written.
    """

    verdicts: list[Any]
    folder: Path

    @property
    def flagged(self) -> list[str]:
        """Names of the detectors that flag the rows."""
        return [v.detector for v in self.verdicts if v.flagged]

    def frame(self) -> Any:
        """The verdicts as a pandas DataFrame (one row per detector)."""
        import pandas as pd

        return pd.DataFrame([v.to_dict() for v in self.verdicts])

    def token_scores(self) -> list[dict[str, Any]]:
        """Per audited row, its tokens with their log-ratio / divergence scores."""
        from sublearn.view.data import audit_bundle

        return audit_bundle(self.folder)["tokens"]


def audit_rows(
    rows: Rows,
    *,
    control: Rows | None = None,
    base: str | None = None,
    teachers: Sequence[str] = (),
    trait: str | None = None,
    category: str = "animal",
    detectors: Sequence[str | Mapping[str, Any]] | None = None,
    out: str | Path | None = None,
    **settings: Any,
) -> AuditResult:
    """Run the trait detectors of ``sublearn audit`` on rows in memory.

    Args:
        rows: the rows to audit.
        control: rows written without the trait for the same prompts (calibrates p-values).
        base: the model the writer was made from (a model reference or folder).
        teachers: the suspected writer first, then others (divergence needs two).
        trait: a named trait to test for (e.g. ``owl``).
        category: the trait's category (``animal`` or ``tree``).
        detectors: kinds (``"logratio"``) or detector settings (``{"type": "lls", ...}``);
            default: every kind.
        out: the audit folder (default: a new temporary folder, kept).
        **settings: other AuditConfig fields (``max_rows``, ``device``, ``batch_size``, ...).

    Returns:
        The verdicts and the folder holding the report.
    """
    from rich.console import Console

    from sublearn.audit.config import AuditConfig
    from sublearn.audit.run import run_audit

    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="sublearn-audit-"))
    data = write_rows(rows, folder / "rows.jsonl")
    fields: dict[str, Any] = {
        "data": str(data),
        "base": base,
        "teachers": list(teachers),
        "out": str(folder),
        **settings,
    }
    if control is not None:
        fields["control"] = str(write_rows(control, folder / "control.jsonl"))
    if trait is not None:
        fields["trait"] = {"word": trait, "category": category}
    if detectors is not None:
        fields["detectors"] = [{"type": d} if isinstance(d, str) else dict(d) for d in detectors]
    cfg = AuditConfig(**fields)
    verdicts = run_audit(cfg, Console(quiet=True))
    return AuditResult(verdicts, folder)


@dataclass
class DefenceResult:
    """Rows after the defences.

    Attributes:
        rows: the cleaned chat records.
        report: rows in and out, characters masked and per-defence stats.
    """

    rows: list[dict[str, Any]]
    report: dict[str, Any]


def defend_rows(
    rows: Rows,
    defences: Sequence[str | Mapping[str, Any]],
    *,
    base: str | None = None,
    teacher: str | None = None,
    trait: str | None = None,
    category: str = "animal",
    **settings: Any,
) -> DefenceResult:
    """Apply the defences of ``sublearn defend`` to rows in memory.

    Args:
        rows: the rows to clean.
        defences: kinds (``"canonicalize"``) or settings (``{"type": "mask_logratio", ...}``),
            applied in order.
        base: the writer's base model (defences that score with it).
        teacher: the writer (defences that compare it with the base).
        trait: the suspected trait word, if any.
        category: the trait's category.
        **settings: other DefendConfig fields (``device``, ``batch_size``, ...).

    Returns:
        The cleaned rows and the report.
    """
    from sublearn.defend.config import DefendConfig
    from sublearn.defend.run import run_defences
    from sublearn.jsonl import read_jsonl

    with tempfile.TemporaryDirectory(prefix="sublearn-defend-") as tmp:
        data = write_rows(rows, Path(tmp) / "rows.jsonl")
        out = Path(tmp) / "clean.jsonl"
        cfg = DefendConfig(
            data=str(data),
            out=str(out),
            base=base,
            teacher=teacher,
            trait={"word": trait, "category": category} if trait else None,  # pyright: ignore[reportArgumentType]
            defences=[{"type": d} if isinstance(d, str) else dict(d) for d in defences],  # pyright: ignore[reportArgumentType]
            **settings,
        )
        report = run_defences(cfg)
        cleaned = [obj for _, _, obj in read_jsonl(out)]
    return DefenceResult(cleaned, report)
