"""A chat-completions server in a thread that behaves as llama.cpp's does, for fast tests.

Like llama.cpp's OpenAI-compatible server it lists one model at ``GET /v1/models`` yet
answers any model name, and returns ONE choice whatever ``n`` asks for; unlike it, it
can leave out log-probabilities, fail on demand (HTTP errors from the K-th chat request
on, or replies that are not chat completions), and be stopped mid-run. Replies are a
pure function of the request (``"<content> #<seed>"``), so a test can tell which request
answered which row. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class LlamaLikeServer:
    """The server; start it with ``with LlamaLikeServer(...) as server:``.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
        chat_requests: chat-completion requests received (failed ones included).
        bodies: their JSON bodies, in arrival order.
    """

    def __init__(
        self,
        served: tuple[str, ...] = ("smollm2",),
        *,
        logprobs: bool = True,
        fail_from: int | None = None,
        fail_status: int = 500,
        malformed: bool = False,
        port: int = 0,
    ) -> None:
        """Configure the behaviour.

        Args:
            served: the names ``GET /v1/models`` lists (any name is answered anyway).
            logprobs: report top log-probabilities of the first reply token when asked.
            fail_from: chat requests from this 0-based count on get ``fail_status``.
            fail_status: the HTTP status of those failures.
            malformed: answer chat requests with JSON that is no chat completion.
            port: the port (0: a free one).
        """
        self.served = served
        self.logprobs = logprobs
        self.fail_from = fail_from
        self.fail_status = fail_status
        self.malformed = malformed
        self.chat_requests = 0
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> LlamaLikeServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening: later requests are refused (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            index = self.chat_requests
            self.chat_requests += 1
            self.bodies.append(body)
        if self.fail_from is not None and index >= self.fail_from:
            return self.fail_status, {"error": {"message": "injected failure", "type": "x"}}
        if self.malformed:
            return 200, {"object": "chat.completion", "choices": "none today"}
        text = f"{body['messages'][-1]['content']} #{body.get('seed')}"
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None,
        }
        if self.logprobs and body.get("logprobs"):
            top = [{"token": " owl", "logprob": -0.5, "bytes": None}]
            first = {"token": " owl", "logprob": -0.5, "bytes": None, "top_logprobs": top}
            choice["logprobs"] = {"content": [first]}
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        return 200, {
            "id": f"chatcmpl-{index}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", ""),
            "choices": [choice],
            "usage": usage,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    data = [{"id": m, "object": "model", "owned_by": "me"} for m in server.served]
                    self._send(200, {"object": "list", "data": data})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"detail": "Not Found"})  # as llama.cpp's, e.g. /v1/files
                    return
                self._send(*server._answer(json.loads(raw or b"{}")))

        return Handler
