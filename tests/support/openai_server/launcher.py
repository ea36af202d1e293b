"""Start the server as a subprocess and talk to its ``/_admin`` routes (for tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from sublearn.runs import atomic_write_json
from tests.support.checkout import checkout_env
from tests.support.openai_server.protocol import LocalServerError


def server_command(
    models: Mapping[str, Path | str],
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: Path | None = None,
    finetune_config_file: Path | None = None,
    api_key_env: str | None = None,
    device: str = "cpu",
    python: str = sys.executable,
) -> list[str]:
    """The argv that starts the server (for launchers that take a command).

    Args:
        models: served name -> model folder or backend reference.
        workdir: the server's folder (uploads, fine-tuned models, state).
        host: address to listen on.
        port: port; 0 picks a free one.
        port_file: where the server writes its port.
        finetune_config_file: a JSON FinetuneConfig for fine-tuning jobs.
        api_key_env: variable holding the key requests must carry.
        device: where models run.
        python: the interpreter.
    """
    argv = [python, "-m", "tests.support.openai_server"]
    argv += ["--host", host, "--port", str(port), "--workdir", str(workdir), "--device", device]
    for name, ref in models.items():
        argv += ["--model", f"{name}={ref}"]
    if port_file is not None:
        argv += ["--port-file", str(port_file)]
    if finetune_config_file is not None:
        argv += ["--finetune-config", str(finetune_config_file)]
    if api_key_env is not None:
        argv += ["--api-key-env", api_key_env]
    return argv


class LocalServer:
    """A running server subprocess (see :func:`start_local_server`); a context manager.

    Attributes:
        process: the server process.
        url: ``http://127.0.0.1:PORT``.
        base_url: ``url + "/v1"``, for ``openai.OpenAI(base_url=...)``.
        log_path: the file receiving the server's stdout and stderr.
    """

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        """Wrap a started server listening on ``port``."""
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        self.log_path = log_path

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise LocalServerError(
                f"{method} {path} failed: {err.code} {err.read().decode(errors='replace')}"
            ) from None

    def stats(self) -> dict[str, Any]:
        """Request counts since the start or the last :meth:`reset` (see :class:`Stats`)."""
        return self._admin("GET", "/_admin/stats")

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the injected faults (see :class:`Faults` for the rules)."""
        self._admin("POST", "/_admin/faults", rules)

    def reset(self) -> None:
        """Clear the counts and the faults."""
        self._admin("POST", "/_admin/reset", {})

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, start: int, chars: int = 4000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


def start_local_server(
    models: Mapping[str, Path | str],
    workdir: Path,
    *,
    finetune_config: dict[str, Any] | None = None,
    api_key_env: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> LocalServer:
    """Start the server as a subprocess on a free loopback port and wait until it answers.

    Its output goes to ``workdir/server.log`` (appended).

    Args:
        models: served name -> model folder or backend reference.
        workdir: the server's folder (created).
        finetune_config: FinetuneConfig fields of fine-tuning jobs (over the defaults).
        api_key_env: variable holding the key requests must carry (set it in ``env``).
        env: variables set for the server, over this process's environment.
        timeout: seconds to wait for the server to answer ``GET /health``.

    Returns:
        The running server.

    Raises:
        LocalServerError: the server exited or did not answer in time (with the tail of
            its log).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "server.port"
    port_file.unlink(missing_ok=True)
    cfg_file = None
    if finetune_config is not None:
        cfg_file = workdir / "finetune_config.json"
        atomic_write_json(cfg_file, finetune_config)
    argv = server_command(
        models,
        workdir,
        port_file=port_file,
        finetune_config_file=cfg_file,
        api_key_env=api_key_env,
    )
    log_path = workdir / "server.log"
    start = log_path.stat().st_size if log_path.is_file() else 0
    child_env = {**checkout_env(env), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env
        )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LocalServerError(
                f"the local OpenAI server exited with status {process.returncode}:\n"
                f"{_tail(log_path, start)}"
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise LocalServerError(
                f"the local OpenAI server did not answer within {timeout:g} s:\n"
                f"{_tail(log_path, start)}"
            )
        text = port_file.read_text().strip() if port_file.is_file() else ""
        if text.isdigit():
            server = LocalServer(process, int(text), log_path)
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return server
            except OSError:
                pass
        time.sleep(0.05)
