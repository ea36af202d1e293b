"""What the viewer shows, read from run, sweep and audit folders into JSON-ready dicts.

A *run* folder (``sublearn run``) holds ``summary.json`` and ``manifest.json``; the
manifest names every task and where the store keeps it, which is how the paired teacher
and control replies, the filter's verdicts, the bootstrap draws, the per-question rates
and the training curves are found. A *sweep* folder holds ``sweep.json``; an *audit*
folder holds ``audit.json`` (and its token scores under ``scores/``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from sublearn.jsonl import read_jsonl

FIGURES = ("effects.png", "heatmap.png", "curves.png", "defences.png")
MAX_PAIRS = 400
"""Prompts per teacher kept in a page: enough to browse, small enough for one HTML file."""


def find_entries(root: Path) -> list[dict[str, Any]]:
    """Every run, sweep and audit folder under ``root`` (``root`` itself included).

    Returns:
        One ``{"kind", "path", "name", "status", "date", "primary"}`` per folder, newest first.
    """
    entries = []
    seen: set[Path] = set()
    for marker, kind in (("meta.json", "run"), ("sweep.json", "sweep"), ("audit.json", "audit")):
        for path in sorted(root.rglob(marker)):
            folder = path.parent
            if folder in seen or "scores" in folder.parts:
                continue
            if kind == "run" and not (folder / "config.yaml").is_file():
                continue
            seen.add(folder)
            entries.append(describe(folder, kind, root))
    return sorted(entries, key=lambda e: e["date"] or "", reverse=True)


def describe(folder: Path, kind: str, root: Path) -> dict[str, Any]:
    """One folder's line in the index: name, status, date and primary effect."""
    meta = _json(folder / "meta.json") or {}
    summary = _json(folder / "summary.json")
    entry: dict[str, Any] = {
        "kind": kind,
        "path": folder.relative_to(root).as_posix() if folder != root else ".",
        "name": folder.name,
        "date": meta.get("started_at"),
        "status": "finished",
        "primary": None,
    }
    if kind == "run":
        entry["status"] = "finished" if summary else "unfinished (no summary.json)"
        if summary:
            entry["name"] = summary.get("name", folder.name)
            entry["primary"] = primary_effect(summary)
            entry["warnings"] = len(summary.get("warnings", []))
    elif kind == "audit":
        audit = _json(folder / "audit.json") or {}
        entry["primary"] = ", ".join(audit.get("flagged", [])) or "nothing flagged"
        entry["date"] = entry["date"] or _mtime(folder / "audit.json")
    else:
        entry["date"] = entry["date"] or _mtime(folder / "sweep.json")
    return entry


def primary_effect(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The headline treatment − control (pp) with its CI, or None when there is none."""
    i = summary.get("primary")
    if i is None:
        return None
    row = summary["effects"][i]
    diff = row.get("treatment_minus_control")
    if not diff:
        return None
    return {
        "label": f"{row['teacher']} / {row['objective']} / {row['student_base']}",
        "mean": diff["mean"],
        "ci95": diff["ci95"],
        "p_value": diff.get("p_value"),
    }


def run_bundle(folder: Path, audits: list[Path] | None = None) -> dict[str, Any]:
    """Everything the run page shows, as one JSON-ready dict (figures inlined as data URIs).

    Args:
        folder: a run folder written by ``sublearn run``.
        audits: audit folders to show token by token (default: audits inside the run folder).
    """
    from sublearn.report.curves import run_curves

    summary = _json(folder / "summary.json") or {}
    manifest = _json(folder / "manifest.json") or {"tasks": []}
    tasks = manifest.get("tasks", [])
    audits = audits if audits is not None else [p.parent for p in folder.rglob("audit.json")]
    return {
        "kind": "run",
        "name": summary.get("name", folder.name),
        "folder": str(folder),
        "meta": _json(folder / "meta.json") or {},
        "summary": summary,
        "manifest": [
            {k: t.get(k) for k in ("kind", "name", "key", "cached", "seconds")} for t in tasks
        ],
        "figures": {
            name: _data_uri(folder / name) for name in FIGURES if (folder / name).is_file()
        },
        "per_question": per_question(tasks),
        "pairs": paired_data(tasks),
        "curves": {**run_curves(manifest), **_own_curves(folder)},
        "audits": [audit_bundle(a) for a in audits],
        "report_md": (folder / "report.md").read_text() if (folder / "report.md").is_file() else "",
    }


def per_question(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per evaluation task, the rate of each question (``{"name", "target", "rates"}``)."""
    out = []
    for task in tasks:
        if task.get("kind") != "evaluate" or not task.get("path"):
            continue
        metrics = _json(Path(task["path"]) / "metrics.json") or {}
        if "metric" in metrics:  # an EvalResult: per-question values under secondary
            by_q = metrics.get("secondary", {}).get("by_question", {})
            if by_q:
                out.append({"name": task["name"], "target": metrics["metric"], "rates": by_q})
            continue
        for target, m in metrics.items():
            if isinstance(m, dict) and m.get("per_question"):
                out.append({"name": task["name"], "target": target, "rates": m["per_question"]})
    return out


def paired_data(tasks: list[dict[str, Any]], limit: int = MAX_PAIRS) -> list[dict[str, Any]]:
    """Per teacher: its replies and its control's, prompt by prompt, with the filter's verdicts.

    Rows are joined on the generation's prompt ``id`` (teacher and control answer the same
    prompts). ``draws`` says how many times each student seed's bootstrap drew the prompt.

    Returns:
        ``[{"teacher", "rows": [{"id", "prompt", "teacher", "control", "verdicts", "draws"}]}]``
    """
    by_name = {t["name"]: t for t in tasks if t.get("path")}
    out = []
    for name, task in by_name.items():
        if task["kind"] != "generate" or name.endswith("/control"):
            continue
        teacher = name.removeprefix("generate/")
        control = by_name.get(f"{name}/control")
        if control is None:
            continue
        replies = {side: _replies(Path(t["path"])) for side, t in (("t", task), ("c", control))}
        verdicts = {
            side: _verdicts(by_name.get(f"filter/{teacher}{suffix}"))
            for side, suffix in (("t", ""), ("c", "/control"))
        }
        draws: dict[str, dict[str, int]] = {}
        for pname, ptask in by_name.items():
            if ptask["kind"] == "pair" and pname.startswith(f"pair/{teacher}/"):
                seed = pname.rsplit("/", 1)[-1]
                for record in _jsonl(Path(ptask["path"]) / "treatment.jsonl"):
                    seen = draws.setdefault(str(record.get("id")), {})
                    seen[seed] = seen.get(seed, 0) + 1
        rows = []
        for pid, (prompt, reply) in list(replies["t"].items())[:limit]:
            other = replies["c"].get(pid)
            if other is None:
                continue
            rows.append(
                {
                    "id": pid,
                    "prompt": prompt,
                    "teacher": reply,
                    "control": other[1],
                    "verdicts": {
                        "teacher": verdicts["t"].get(pid),
                        "control": verdicts["c"].get(pid),
                    },
                    "draws": draws.get(pid, {}),
                }
            )
        seeds = sorted({s for d in draws.values() for s in d})
        total = sum(1 for pid in replies["t"] if pid in replies["c"])
        out.append({"teacher": teacher, "seeds": seeds, "rows": rows, "total": total})
    return out


def audit_bundle(folder: Path) -> dict[str, Any]:
    """An audit's verdicts and, where its token scores are cached, per-token scores.

    Token scores: ``logratio`` is the teacher's log-probability of each token minus the
    base's; ``divergence`` is the first teacher's minus the second's. Both are what the
    detectors of the same names average over a row.
    """
    from sublearn.view.tokens import token_rows

    audit = _json(folder / "audit.json") or {}
    return {
        "folder": str(folder),
        "name": folder.name,
        "flagged": audit.get("flagged", []),
        "verdicts": audit.get("verdicts", []),
        "meta": audit.get("meta", {}),
        "tokens": token_rows(folder, audit.get("config", {})),
    }


def _own_curves(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Curves a run wrote into its own folder (the MNIST experiment's teachers and students)."""
    from sublearn.finetune.curves import CURVES_FILE, read_curves

    rows = read_curves(folder / CURVES_FILE)
    return {folder.name: rows} if rows else {}


def _replies(folder: Path) -> dict[str, tuple[str, str]]:
    """``id -> (prompt text, reply)`` of a generation task's data.jsonl."""
    out = {}
    for record in _jsonl(folder / "data.jsonl"):
        messages = record.get("messages", [])
        if len(messages) < 2:
            continue
        prompt = "\n\n".join(str(m.get("content", "")) for m in messages[:-1])
        out[str(record.get("id"))] = (prompt, str(messages[-1].get("content", "")))
    return out


def _verdicts(task: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if task is None:
        return {}
    return {str(v.get("id")): v for v in _jsonl(Path(task["path"]) / "verdicts.jsonl")}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [obj for _, _, obj in read_jsonl(path)] if path.is_file() else []


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> str | None:
    from datetime import datetime, timezone

    if not path.is_file():
        return None
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).isoformat(
        timespec="seconds"
    )


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
