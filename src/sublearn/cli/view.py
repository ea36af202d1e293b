"""``sublearn view``: browse runs, sweeps and audits in a local web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sublearn.cli.options import console, user_errors
from sublearn.errors import DataError


def view(
    runs: Annotated[
        Path, typer.Argument(help="Folder holding run, sweep and audit folders (searched deeply).")
    ] = Path("runs"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 7575,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the default browser.")
    ] = False,
) -> None:
    """Serve a local web page (127.0.0.1 only) over the runs, sweeps and audits in RUNS.

    Per run: effects with CIs, heatmap, per-question rates, warnings, manifest, the teacher's
    and control's replies side by side with the filter's verdicts, audits' per-token scores
    and training curves. Ctrl-C stops it. Each run's report.html holds the same run page.
    """
    from sublearn.view.server import make_server

    with user_errors():
        if not runs.is_dir():
            raise DataError(f"{runs}: no such folder (give the folder your runs are in)")
        try:
            server = make_server(runs, port)
        except OSError as err:
            raise DataError(
                f"cannot listen on 127.0.0.1:{port}: {err.strerror}; try --port 0"
            ) from None
    host, bound = server.server_address[:2]
    url = f"http://{host}:{bound}/"
    console.print(f"sublearn view: [bold]{url}[/] over {runs.resolve()} (Ctrl-C stops)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
