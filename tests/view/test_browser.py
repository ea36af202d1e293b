"""``report.html`` and ``sublearn view`` in a real headless Chromium.

Skipped, with the reason, where Playwright or Chromium is missing (see tests/view/browser.py
for how to install them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.view.export_html import write_report_html
from sublearn.view.server import serve_in_background
from tests.view.browser import browser_page, missing_reason
from tests.view.synthetic import CONTROL_REPLY, PROMPT, TEACHER_REPLY, write_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

TABS = ("overview", "paired", "tokens", "curves", "manifest", "report")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("browser"))


def _check_run_page(page, errors: list[str]) -> None:
    for tab in TABS:
        page.click(f"nav button[data-tab={tab}]")
        assert page.locator(f"section#{tab}").is_visible()
    assert errors == []
    # Paired data: the teacher's and the control's reply to the same prompt, side by side.
    page.click("nav button[data-tab=paired]")
    row = page.locator("tr.pair-row", has_text=PROMPT)
    assert row.locator(".teacher-reply").inner_text() == TEACHER_REPLY
    assert row.locator(".control-reply").inner_text() == CONTROL_REPLY
    page.check("#paired-both")  # prompt 1 was dropped for the control
    assert page.locator("tr.pair-row").count() == 1
    # Token audit: the token the teacher likes far more than the base is coloured red.
    page.click("nav button[data-tab=tokens]")
    owl = page.locator("span.tok", has_text="owl").first
    colour = owl.evaluate("e => getComputedStyle(e).backgroundColor")
    red, green, _blue, alpha = (float(x) for x in colour[5:-1].split(","))
    assert red > 200 and green < 100 and alpha > 0.5
    # Curves: one SVG line per training task.
    page.click("nav button[data-tab=curves]")
    assert page.locator("svg.chart-loss path[stroke-width]").count() == 1
    assert errors == []


def test_report_html_works_from_the_file_alone(run: Path) -> None:
    html = write_report_html(run)
    with browser_page() as (page, errors):
        page.goto(html.as_uri())
        _check_run_page(page, errors)


def test_view_server_lists_runs_and_opens_each(run: Path) -> None:
    server, url = serve_in_background(run.parent.parent)
    try:
        with browser_page() as (page, errors):
            page.goto(url)
            assert page.locator("a", has_text="toy-owl").is_visible()
            page.click("a:text('toy-owl')")
            page.wait_for_selector("nav button[data-tab=paired]")
            _check_run_page(page, errors)
            page.goto(url)
            page.click("a:text('audit')")
            page.wait_for_selector("span.tok")
            assert errors == []
    finally:
        server.shutdown()
        server.server_close()


def test_sweep_page_links_each_point_to_its_run(tmp_path: Path) -> None:
    import json
    import shutil

    run = write_run(tmp_path / "own")
    root = run.parent.parent
    sweep = root / "sweeps" / "grid"
    shutil.copytree(run, sweep / "points" / "rows=2")
    diff = {"mean": 1.5, "ci95": [0.5, 2.5], "p_value": 0.01}
    points = [
        {
            "point": {"data.rows": 2},
            "label": "rows=2",
            "primary": {"treatment_minus_control": diff},
        },
        {"point": {"data.rows": 1}, "label": "rows=1", "primary": None, "error": "too few rows"},
    ]
    (sweep / "sweep.json").write_text(json.dumps({"grid": ["data.rows"], "points": points}))
    server, url = serve_in_background(root)
    try:
        with browser_page() as (page, errors):
            page.goto(f"{url}sweep/sweeps/grid/")
            assert page.locator("text=rows=1 failed: too few rows").is_visible()
            page.click("a:text('rows=2')")
            page.wait_for_selector("nav button[data-tab=paired]")
            assert page.locator("h1").inner_text() == "toy-owl"
            assert errors == []
    finally:
        server.shutdown()
        server.server_close()
