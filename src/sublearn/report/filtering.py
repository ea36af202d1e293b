"""The data section of an experiment's report: the filter's table, decoding and checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sublearn.report.formatting import markdown_table


def filter_lines(filter_reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The filter table: per dataset, rows generated, accepted and rejected by reason."""
    reasons = list(dict.fromkeys(k for r in filter_reports.values() for k in r.get("rejected", {})))
    decoding = any("decoding" in r for r in filter_reports.values())
    header = ["data", *(["decoding"] if decoding else []), "total", "accepted", "valid"]
    header += [*(f"rejected: {k}" for k in reasons), "trait mentions", "kept"]
    body = [
        [
            name,
            *([r.get("decoding", "free")] if decoding else []),
            r.get("total", "n/a"),
            r.get("accepted", "n/a"),
            _valid_rate(r),
            *(r.get("rejected", {}).get(k, 0) for k in reasons),
            r.get("trait_mentions", "n/a"),
            r.get("kept", "n/a"),
        ]
        for name, r in filter_reports.items()
    ]
    return markdown_table(header, body)


def decoding_lines(filter_reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A note on constrained data, whose valid rate the decoder enforced ([] if none)."""
    constrained = [n for n, r in filter_reports.items() if r.get("decoding") == "constrained"]
    if not constrained:
        return []
    return [
        "",
        f"**Constrained data** ({', '.join(constrained)}): the teachers could only write a "
        "number list in each prompt's format (constrained decoding, "
        "`data.generation.constrained`), so the valid rate measures the format the decoder "
        "enforced, not the teacher's own compliance.",
    ]


def _valid_rate(report: Mapping[str, Any]) -> str:
    total, accepted = report.get("total"), report.get("accepted")
    if not isinstance(total, int) or not isinstance(accepted, int) or total == 0:
        return "n/a"
    return f"{accepted / total:.1%}"


def check_lines(filter_reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The checks after the filter (code only, answer, judges): counts and dropped examples."""
    checked = {name: r for name, r in filter_reports.items() if r.get("checks")}
    if not checked:
        return []
    body = [
        [name, check, tally["seen"], tally["dropped"]]
        for name, r in checked.items()
        for check, tally in r["checks"].items()
    ]
    lines = [
        "",
        "### Checks",
        "",
        "Each check sees the replies that passed everything before it; every reply's verdict "
        "is in the filter task's verdicts.jsonl.",
        "",
        *markdown_table(["data", "check", "seen", "dropped"], body),
    ]
    examples = [
        (name, reason, e)
        for name, r in checked.items()
        for reason, items in r.get("examples", {}).items()
        for e in items[:1]
    ]
    if examples:
        lines += ["", "Dropped, one example per reason:", ""]
        for name, reason, e in examples:
            reply = " ".join(str(e["reply"]).split())[:160]
            verdict = e.get("verdict")
            raw = verdict.get("raw") if isinstance(verdict, dict) else verdict
            lines.append(f"- {name}, {reason}: `{reply}` ({raw})")
    return lines
