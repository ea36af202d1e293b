"""The ``sublearn view`` server: a folder's runs, sweeps and audits on 127.0.0.1 only.

Pages are rendered from the folders on every request, so a run that finishes while the
viewer is open shows up on reload. Only paths under the served folder are read.
"""

from __future__ import annotations

import base64
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from sublearn.view.data import audit_bundle, find_entries, run_bundle
from sublearn.view.page import render

HOST = "127.0.0.1"


def page_for(root: Path, url_path: str) -> tuple[int, str]:
    """The status and HTML of one URL: ``/``, ``/run/<folder>/``, ``/sweep/...``, ``/audit/...``.

    Args:
        root: the served folder.
        url_path: the request's path.
    """
    parts = [p for p in unquote(urlparse(url_path).path).split("/") if p]
    if not parts:
        entries = find_entries(root)
        return HTTPStatus.OK, render(
            {"kind": "index", "root": str(root), "entries": entries}, "sublearn view"
        )
    kind, rel = parts[0], "/".join(parts[1:]) or "."
    folder = (root / rel).resolve()
    if kind not in ("run", "sweep", "audit") or not folder.is_relative_to(root.resolve()):
        return HTTPStatus.NOT_FOUND, _not_found(url_path)
    if not folder.is_dir():
        return HTTPStatus.NOT_FOUND, _not_found(url_path)
    back = "/"
    data: dict[str, Any]
    if kind == "run":
        data = run_bundle(folder)
    elif kind == "audit":
        data = {"kind": "audit", "name": folder.name, "folder": str(folder)}
        data["audit"] = audit_bundle(folder)
    else:
        data = _sweep_bundle(folder)
        data["path"] = folder.relative_to(root.resolve()).as_posix()
    data["back"] = back
    return HTTPStatus.OK, render(data, f"sublearn · {data.get('name', folder.name)}")


def _sweep_bundle(folder: Path) -> dict[str, Any]:
    import json

    sweep = (
        json.loads((folder / "sweep.json").read_text()) if (folder / "sweep.json").is_file() else {}
    )
    figures = {}
    if (folder / "sweep.png").is_file():
        figures["sweep.png"] = (
            "data:image/png;base64,"
            + base64.b64encode((folder / "sweep.png").read_bytes()).decode()
        )
    return {
        "kind": "sweep",
        "name": folder.name,
        "folder": str(folder),
        "sweep": {"grid": sweep.get("grid", []), "points": sweep.get("points", [])},
        "figures": figures,
    }


def _not_found(path: str) -> str:
    import html

    return (
        "<!DOCTYPE html><title>not found</title>"
        f"<p>Nothing at {html.escape(path)}. <a href='/'>All runs</a></p>"
    )


def make_server(root: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``root`` bound to 127.0.0.1 (``port`` 0: any free port); not started."""
    root = root.resolve()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = page_for(root, self.path)
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the console belongs to the user; requests are not news

    return ThreadingHTTPServer((HOST, port), Handler)


def serve_in_background(root: Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a thread (for tests and notebooks); returns it and its URL.

    Stop it with ``server.shutdown(); server.server_close()``.
    """
    server = make_server(root, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, bound = server.server_address[:2]
    return server, f"http://{host}:{bound}/"
