"""``report.html``: a run's viewer pages in one file that opens without a server."""

from __future__ import annotations

from pathlib import Path

from sublearn.runs import atomic_write_text
from sublearn.view.data import run_bundle
from sublearn.view.page import render

REPORT_HTML = "report.html"


def write_report_html(run_dir: Path, audits: list[Path] | None = None) -> Path:
    """Write ``run_dir/report.html``: effects, paired data, token audit, curves, manifest.

    Args:
        run_dir: a run folder with summary.json and manifest.json.
        audits: audit folders to include (default: those inside the run folder).

    Returns:
        The file written.
    """
    bundle = run_bundle(run_dir, audits)
    path = run_dir / REPORT_HTML
    atomic_write_text(path, render(bundle, f"sublearn · {bundle['name']}"))
    return path
