"""Screenshots of every view of ``sublearn view`` for docs/screenshots/.

Usage: ``python -m tests.view.screenshots RUNS_FOLDER OUT_FOLDER [RUN]`` where RUN is the
run folder's path under RUNS_FOLDER (default: the first run listed). Needs Playwright and a
Chromium (see tests/view/browser.py). Fails if a page logs a console error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sublearn.view.data import find_entries
from sublearn.view.server import serve_in_background
from tests.view.browser import browser_page

VIEWS = ("overview", "paired", "tokens", "curves", "manifest")
NAMES = {"overview": "effects"}


def take(root: Path, out: Path, run: str | None = None) -> list[Path]:
    """Write ``view-index.png`` and one ``view-<view>.png`` per run view; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    run = run or next(e["path"] for e in find_entries(root) if e["kind"] == "run")
    server, url = serve_in_background(root)
    shots = []
    try:
        with browser_page(width=1280, height=860) as (page, errors):
            page.goto(url)
            shots.append(out / "view-index.png")
            page.screenshot(path=str(shots[-1]))
            page.goto(f"{url}run/{run}/")
            for view in VIEWS:
                page.click(f"nav button[data-tab={view}]")
                if view == "paired":
                    page.check("#paired-both")  # the prompts students train on
                shots.append(out / f"view-{NAMES.get(view, view)}.png")
                page.screenshot(path=str(shots[-1]))
            if errors:
                raise SystemExit(f"console errors: {errors}")
    finally:
        server.shutdown()
        server.server_close()
    return shots


if __name__ == "__main__":
    for shot in take(
        Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None
    ):
        print(shot)
