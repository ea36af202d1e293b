"""The audit report: JSON, markdown table and sections, figures, console table."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from sublearn.audit.config import AuditConfig, ClassifierDetector, FrequencyDetector, LLSDetector
from sublearn.audit.distribution import classifier, frequency
from sublearn.audit.report import print_audit_table, write_audit_report
from sublearn.audit.result import skipped
from tests.audit.test_distribution import _rows


def test_report_writes_json_markdown_and_figures(tmp_path: Path):
    data, control = _rows(300, 1, plant=0.4), _rows(300, 2)
    data[0] = type(data[0])(0, data[0].prompt, "1, " * 60 + "7")  # a reply too long to print
    cfg = AuditConfig(
        data="teacher.jsonl",
        control="control.jsonl",
        detectors=[
            LLSDetector(type="lls"),
            FrequencyDetector(type="frequency"),
            ClassifierDetector(type="classifier", permutations=99),
            ClassifierDetector(type="classifier", name="null-classifier", permutations=99),
        ],
    )
    verdicts = [
        skipped("lls", "lls", "", "needs --base"),
        frequency(FrequencyDetector(type="frequency"), data, control),
        classifier(ClassifierDetector(type="classifier", permutations=99), data, control, 0),
        classifier(
            ClassifierDetector(type="classifier", name="null-classifier", permutations=99),
            _rows(300, 3),
            control,
            0,
        ),
    ]
    assert [v.flagged for v in verdicts] == [False, True, True, False]
    write_audit_report(tmp_path, cfg, verdicts, {"rows": 300, "control_rows": 300})

    report = json.loads((tmp_path / "audit.json").read_text())
    assert report["meta"]["rows"] == 300
    assert report["config"]["control"] == "control.jsonl"
    assert report["flagged"] == ["frequency", "classifier"]
    assert [v["detector"] for v in report["verdicts"]] == [
        "lls",
        "frequency",
        "classifier",
        "null-classifier",
    ]
    assert "row_scores" not in report["verdicts"][1]

    md = (tmp_path / "audit.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0][2:]: line for line in table}
    assert "skipped (needs --base)" in rows["lls"]
    assert rows["frequency"].rstrip(" |").endswith("FLAGGED")
    assert rows["classifier"].rstrip(" |").endswith("FLAGGED")
    assert rows["null-classifier"].rstrip(" |").endswith("clear")
    for name in ("lls", "frequency", "classifier", "null-classifier"):
        assert f"## {name} (" in md
    assert "Top tokens:" in md and "Top rows:" in md
    assert "| 77 |" in md or "| 7 |" in md
    # Long replies are cut to 80 characters.
    assert "`" + ("1, " * 60)[:77] + "...`" in md

    figures = tmp_path / "figures"
    names = sorted(p.name for p in figures.iterdir())
    assert names == [
        "classifier-tokens.png",
        "classifier.png",
        "frequency-tokens.png",
        "frequency.png",
        "null-classifier-tokens.png",
        "null-classifier.png",
    ]
    for p in figures.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert "figures/frequency.png" in md


def test_console_table_lists_every_detector():
    console = Console(record=True, width=200)
    verdicts = [
        skipped("lls", "lls", "", "needs --base"),
        frequency(FrequencyDetector(type="frequency"), _rows(400, 1, plant=0.4), _rows(400, 2)),
    ]
    print_audit_table(console, verdicts)
    text = console.export_text()
    assert "lls" in text and "skipped (needs --base)" in text
    assert "frequency" in text and "FLAGGED" in text
