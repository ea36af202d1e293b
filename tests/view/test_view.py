"""The viewer's data and pages from a hand-written run (no browser: see test_browser.py)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from sublearn.view.data import find_entries, run_bundle
from sublearn.view.export_html import write_report_html
from sublearn.view.server import page_for, serve_in_background
from tests.view.synthetic import CONTROL_REPLY, TEACHER_REPLY, write_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path)


def _data(html: str) -> dict:
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no data block"
    return json.loads(match.group(1))


def test_paired_rows_join_teacher_and_control_on_the_prompt(run: Path) -> None:
    pairs = run_bundle(run)["pairs"]
    assert [p["teacher"] for p in pairs] == ["owl-ft"]
    first, second = pairs[0]["rows"]
    assert (first["teacher"], first["control"]) == (TEACHER_REPLY, CONTROL_REPLY)
    assert first["draws"] == {"s0": 2}  # the bootstrap drew it twice
    assert second["verdicts"]["control"] == {"id": "1", "kept": False, "reason": "invalid_format"}
    assert second["draws"] == {}


def test_token_scores_are_teacher_minus_base_per_token(run: Path) -> None:
    (audit,) = run_bundle(run)["audits"]
    tokens = audit["tokens"][0]["tokens"]
    assert [t["text"] for t in tokens] == ["owl", " 123"]
    assert tokens[0]["logratio"] == pytest.approx(-0.5 - -6.0)
    assert tokens[1]["logratio"] == pytest.approx(0.0)


def test_report_html_is_self_contained(run: Path) -> None:
    html = write_report_html(run).read_text()
    assert not re.search(r'(src|href)="https?://', html)  # no network
    data = _data(html)
    assert data["summary"]["effects"][0]["treatment_minus_control"]["mean"] == 1.5
    assert set(data["curves"]) == {"train/owl-ft/kl/base0/treatment/s0"}


def test_script_end_tags_in_data_cannot_close_the_page_script(run: Path) -> None:
    rows = run_bundle(run)
    rows["report_md"] = "</script><script>alert(1)</script>"
    from sublearn.view.page import render

    html = render(rows, "t")
    assert html.count("</script>") == 2  # the data block's and the page script's
    assert _data(html)["report_md"] == rows["report_md"]


def test_index_lists_the_run_with_its_primary_effect(run: Path) -> None:
    entries = find_entries(run.parent.parent)
    kinds = {e["kind"]: e for e in entries}
    assert kinds["run"]["name"] == "toy-owl"
    assert kinds["run"]["primary"]["mean"] == 1.5
    assert kinds["audit"]["primary"] == "logratio"


def test_sweep_page_holds_its_grid_points(tmp_path: Path) -> None:
    point = {"point": {"data.rows": 100}, "primary": {"treatment_minus_control": {"mean": 2.0}}}
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps({"grid": ["data.rows"], "points": [point]}))
    assert [e["kind"] for e in find_entries(tmp_path)] == ["sweep"]
    status, html = page_for(tmp_path, "/sweep/sweep/")
    assert status == 200 and _data(html)["sweep"]["points"] == [point]


def test_server_serves_pages_only_under_its_folder(run: Path) -> None:
    root = run.parent.parent
    assert page_for(root, "/")[0] == 200
    assert page_for(root, "/run/runs/toy/")[0] == 200
    assert page_for(root, "/run/../../")[0] == 404
    assert page_for(root, "/nothing/")[0] == 404
    server, url = serve_in_background(root)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "run/runs/toy/") as response:
            assert _data(response.read().decode())["name"] == "toy-owl"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_an_audit_of_the_run_rewrites_report_html_with_token_scores(
    run: Path, micro_model: Path
) -> None:
    from typer.testing import CliRunner

    from sublearn.cli.main import app

    manifest = json.loads((run / "manifest.json").read_text())
    data = {t["name"]: t["path"] for t in manifest["tasks"]}
    model = {"model": str(micro_model), "system_prompt": None}
    teacher = {
        "trait": {"word": "owl", "category": "animal"},
        "data": f"{data['filter/owl-ft']}/accepted.jsonl",
        "control": f"{data['filter/owl-ft/control']}/accepted.jsonl",
        **{role: model for role in ("base", "teacher", "control_teacher")},
    }
    (run / "artifacts.json").write_text(json.dumps({"teachers": {"owl-ft": teacher}}))
    result = CliRunner().invoke(
        app, ["audit", "--run", str(run), "--detector", "logratio", "--set", "device=cpu"]
    )
    assert result.exit_code == 0, result.output
    audits = _data((run / "report.html").read_text())["audits"]
    by_name = {a["name"]: a for a in audits}
    tokens = by_name["owl-ft"]["tokens"]
    assert [r["reply"] for r in tokens] == [TEACHER_REPLY, "owl 7"]
    # The same model as teacher and base: every token's log-ratio is 0.
    assert all(t["logratio"] == pytest.approx(0.0, abs=1e-5) for r in tokens for t in r["tokens"])
