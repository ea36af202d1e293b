"""HTTP over the app: a threaded standard-library server, one request per handler call."""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sublearn.runs import atomic_write_text
from tests.support.openai_server.app import LocalOpenAIApp
from tests.support.openai_server.protocol import ApiError, Response

log = logging.getLogger("sublearn.local_openai_server")

MAX_BODY_BYTES = 1 << 30
"""Largest request body accepted (uploads included)."""


def make_handler(app: LocalOpenAIApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sublearn-local-openai"

        def _serve(self) -> None:
            started = time.monotonic()
            try:
                body = self._read_body()
            except ApiError as err:
                self._send(Response(status=err.status, json=err.body()), close=True)
                return
            try:
                response = app.handle(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            except Exception as err:
                log.exception("error answering %s %s", self.command, self.path)
                response = Response(
                    status=500,
                    json=ApiError(500, f"{type(err).__name__}: {err}", type="server_error").body(),
                )
            self._send(response)
            log.info(
                "%s %s %d %.3fs",
                self.command,
                self.path.split("?")[0],
                response.status,
                time.monotonic() - started,
            )

        def _read_body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                raise ApiError(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
            return self.rfile.read(length) if length else b""

        def _send(self, response: Response, close: bool = False) -> None:
            data = response.payload()
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout): nothing to answer.
                self.close_connection = True

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            # _serve logs each request once, with its duration; headers are never logged.
            del format, args

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(
    app: LocalOpenAIApp,
    host: str,
    port: int,
    stop: threading.Event,
    port_file: Path | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set.

    Prints ``listening on http://HOST:PORT`` (flushed) once connections are accepted,
    after writing the port to ``port_file``.
    """
    server_cls = _Server6 if ":" in host else _Server
    httpd = server_cls((host, port), make_handler(app))
    bound = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
    )
    thread.start()
    if port_file is not None:
        atomic_write_text(port_file, f"{bound}\n")
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{bound}", flush=True)
    try:
        while not stop.wait(0.1):
            pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
