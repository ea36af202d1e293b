"""Start, find and stop vLLM's OpenAI-compatible server, and load LoRA adapters into it.

A ``vllm:`` model reference needs a running server for its base model. :func:`acquire`
returns one: a server already running at ``url`` when configured, else a process started
here (``python -m vllm.entrypoints.openai.api_server``) on a free port, waited on until
``GET /v1/models`` answers, and stopped when the process exits (:func:`shutdown_all` runs
at exit). A process is started once per (model, config) and shared by every reference to
that base in this process.

Students are LoRA adapters on one base. They are not merged: each is loaded into the
running server under its own name (:func:`adapter_name`) through
``POST /v1/load_lora_adapter``, and a request names the adapter as its model, so thirty
students are evaluated by one server holding the base weights once. vLLM serves that
route only when the server's environment has ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``,
which a server started here gets.

vLLM is imported by the server process only; this module imports without it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from http.client import HTTPException
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sublearn.backends.vllm_config import VLLMServerConfig
from sublearn.errors import ModelError

__all__ = [
    "VLLMServer",
    "VLLMServerConfig",
    "acquire",
    "adapter_name",
    "shutdown_all",
]

# How often the startup wait polls the server, and how often it says it is still waiting.
_POLL_S = 0.5
_STATUS_EVERY_S = 30.0
# How long stop() lets the server shut down cleanly (free GPU memory, end its workers).
_STOP_GRACE_S = 30.0
# Log lines quoted in an error about a server that died or never answered.
_TAIL_LINES = 30
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def adapter_name(path: str | Path) -> str:
    """A short name for a LoRA adapter folder, stable across runs and processes.

    Derived from the folder's absolute path, so two students' adapters never share a name
    on one server, and the same adapter loaded twice gets the same name.

    Args:
        path: the adapter folder.

    Returns:
        ``lora-`` and 12 hex digits.
    """
    absolute = str(Path(path).expanduser().resolve())
    return "lora-" + hashlib.sha256(absolute.encode()).hexdigest()[:12]


def _free_port(host: str) -> int:
    """A port nothing listens on now (the OS picks; another process could take it later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _connect_host(host: str) -> str:
    """The address a client reaches a server listening on ``host`` at."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _tail(path: Path | None, lines: int = _TAIL_LINES) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    with path.open(errors="replace") as handle:
        last = deque(handle, maxlen=lines)
    return "".join(last).rstrip() or "(the log is empty)"


class VLLMServer:
    """One vLLM OpenAI-compatible server: started here (and stopped) or found at a URL.

    Use :func:`acquire` to share one server per base model in a process; use the class
    directly (as a context manager) for a server of one's own.

    Attributes:
        model: the base model, as passed to ``--model``; requests for the base name it.
        cfg: the settings.
        log_path: the started process's stdout and stderr; None in URL mode or before start.
    """

    def __init__(
        self,
        model: str,
        cfg: VLLMServerConfig | None = None,
        log_dir: Path | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        """Describe the server; nothing starts until :meth:`start`.

        Args:
            model: hub id or local folder of the base model.
            cfg: how to start or find the server.
            log_dir: folder of the server's log file; None: a new temporary folder.
            api_key: key of a server that requires one (vLLM's ``--api-key``), sent with
                every request this class makes.
        """
        self.model = model
        self.cfg = cfg or VLLMServerConfig()
        self.log_dir = log_dir
        self.log_path: Path | None = None
        self._api_key = api_key
        self._port = self.cfg.port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._ready = False
        self._adapters: dict[str, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """The server's root URL, without ``/v1`` (known once a port is chosen)."""
        if self.cfg.url is not None:
            root = self.cfg.url.rstrip("/")
            # A URL copied from a client config ends in /v1; the routes here add their own.
            return root.removesuffix("/v1")
        if self._port is None:
            raise RuntimeError("the server has no port yet: call start() first")
        return f"http://{_connect_host(self.cfg.host)}:{self._port}"

    @property
    def base_url(self) -> str:
        """The OpenAI client's base URL (``url`` + ``/v1``)."""
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        """The started process's id; None in URL mode or when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def adapters(self) -> dict[str, str]:
        """Adapters loaded through this object: name -> absolute folder."""
        return dict(self._adapters)

    def is_running(self) -> bool:
        """Whether the server was started (or found) and, if started here, is still alive."""
        if self.cfg.url is not None:
            return self._ready
        return self._ready and self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> VLLMServer:
        """Start the server (or find the configured one) and wait until it answers.

        Returns:
            self, ready for requests.

        Raises:
            ModelError: vLLM is not installed; the port is taken; the process exits
                before it answers (with its exit code and the end of its log); or it does
                not answer within ``startup_timeout_s`` (the process is then stopped).
        """
        if self.is_running():
            return self
        if self.cfg.url is not None:
            self._wait_until_ready()
            self._ready = True
            return self
        if self.cfg.command is None and importlib.util.find_spec("vllm") is None:
            raise ModelError(
                f"model {self.model!r} needs a vLLM server, but vllm is not installed here: "
                "pip install 'sublearn[vllm]' on a machine with a CUDA GPU, or set the "
                "server's url to a vLLM server already running (server.url)"
            )
        host = self.cfg.host
        if self._port is None:
            self._port = _free_port(host)
        elif _port_in_use(_connect_host(host).strip("[]"), self._port):
            raise ModelError(
                f"port {self._port} on {host} is already in use: choose another port, leave "
                f"port unset for a free one, or set url to http://{_connect_host(host)}:"
                f"{self._port} to use the server listening there"
            )
        self._launch()
        try:
            self._wait_until_ready()
        except BaseException:
            # Never leave a half-started server holding a GPU behind an error (or Ctrl-C).
            self.stop()
            raise
        self._ready = True
        return self

    def _command(self) -> list[str]:
        port = str(self._port)
        if self.cfg.command is not None:
            values = {
                "{model}": self.model,
                "{host}": self.cfg.host,
                "{port}": port,
                "{python}": sys.executable,
            }
            # Plain replacement, not str.format: arguments such as `-c` code keep their braces.
            command = []
            for arg in self.cfg.command:
                for key, value in values.items():
                    arg = arg.replace(key, value)
                command.append(arg)
            return command
        c = self.cfg
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            c.host,
            "--port",
            port,
            "--tensor-parallel-size",
            str(c.tensor_parallel_size),
            "--gpu-memory-utilization",
            str(c.gpu_memory_utilization),
            "--dtype",
            c.dtype,
            "--seed",
            str(c.seed),
        ]
        if c.max_model_len is not None:
            command += ["--max-model-len", str(c.max_model_len)]
        if c.enable_lora:
            command += ["--enable-lora", "--max-lora-rank", str(c.max_lora_rank)]
            command += ["--max-loras", str(c.max_loras)]
            if c.max_cpu_loras is not None:
                command += ["--max-cpu-loras", str(c.max_cpu_loras)]
        return command + list(c.extra_args)

    def _launch(self) -> None:
        env = dict(os.environ)
        # The server's log is read while it starts; unbuffered output keeps it current.
        env["PYTHONUNBUFFERED"] = "1"
        if self.cfg.enable_lora:
            # vLLM serves /v1/load_lora_adapter only with this set.
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.update(self.cfg.env)
        log_dir = self.log_dir or Path(tempfile.mkdtemp(prefix="sublearn-vllm-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.model)[-60:]
        self.log_path = log_dir / f"vllm-{slug}-{self._port}.log"
        command = self._command()
        self._log_handle = self.log_path.open("ab")
        self._log_handle.write(f"$ {' '.join(command)}\n".encode())
        self._log_handle.flush()
        try:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own process group: stop() then reaches the workers vLLM forks (one per
                # GPU with tensor parallelism), and a Ctrl-C meant for us does not kill it
                # before our own shutdown does.
                start_new_session=True,
            )
        except OSError as err:
            self._close_log()
            raise ModelError(
                f"could not start the server for model {self.model!r} ({command[0]}): {err}"
            ) from err
        _status(f"starting a vLLM server for {self.model} at {self.url} (log: {self.log_path})")

    def _wait_until_ready(self) -> None:
        timeout = self.cfg.startup_timeout_s
        start = time.monotonic()
        next_status = start + _STATUS_EVERY_S
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                code = self._proc.returncode
                log = self.log_path
                self.stop()
                raise ModelError(
                    f"the server for model {self.model!r} exited with code {code} before it "
                    f"was ready; the end of its log ({log}):\n{_tail(log)}"
                )
            status, _ = self._request("GET", "/v1/models", timeout=5.0, quiet=True)
            if status == 200:
                return
            now = time.monotonic()
            if now - start >= timeout:
                if self._proc is None:
                    raise ModelError(
                        f"no server for model {self.model!r} answered at {self.url}/v1/models "
                        f"within {timeout:.0f} s: is it running (server.url)?"
                    )
                log = self.log_path
                self.stop()
                raise ModelError(
                    f"the server for model {self.model!r} did not answer within {timeout:.0f} s "
                    f"(server.startup_timeout_s) and was stopped; the end of its log ({log}):\n"
                    f"{_tail(log)}"
                )
            if now >= next_status:
                where = f" (log: {self.log_path})" if self.log_path is not None else ""
                _status(f"waiting for the server at {self.url}: {now - start:.0f} s{where}")
                next_status = now + _STATUS_EVERY_S
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Stop a server started here: SIGTERM to its process group, SIGKILL after 30 s.

        Does nothing in URL mode (the server is someone else's) or when not running, so
        it can be called any number of times.
        """
        proc = self._proc
        self._ready = False
        self._adapters.clear()
        if proc is None:
            return
        self._proc = None
        try:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            # Workers of a leader that exited on its own may still hold the GPU.
            _signal_group(proc, signal.SIGKILL)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.cfg.url or (f"port {self._port}" if self._port else "not started")
        return f"VLLMServer({self.model!r}, {where}, running={self.is_running()})"

    # ------------------------------------------------------------------ requests

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = 60.0,
        quiet: bool = False,
    ) -> tuple[int, str]:
        """Send one request; returns (HTTP status, body text).

        Args:
            quiet: return status 0 when the server cannot be reached, instead of raising
                (the startup wait polls a server that is not listening yet).

        Raises:
            ModelError: the server cannot be reached (unless ``quiet``).
        """
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self._api_key:
            request.add_header("Authorization", f"Bearer {self._api_key}")
        try:
            with self._opener().open(request, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except (OSError, HTTPException) as err:
            # URLError, refused or reset connections and timeouts are OSErrors; a server
            # that is still binding its socket can also answer a malformed status line.
            if quiet:
                return 0, str(err)
            raise ModelError(f"the server at {self.url} does not answer: {err}") from err

    def _opener(self) -> urllib.request.OpenerDirector:
        host = (urllib.parse.urlsplit(self.url).hostname or "").lower()
        if host in _LOOPBACK:
            # A local server must not be reached through an http_proxy from the environment.
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()

    def served_models(self) -> list[str]:
        """Names the server answers to: the base model and every loaded adapter.

        Raises:
            ModelError: the server cannot be reached or answers with an error.
        """
        status, text = self._request("GET", "/v1/models")
        if status != 200:
            raise ModelError(f"{self.url}/v1/models answered {status}: {_message(text)}")
        return [str(entry["id"]) for entry in json.loads(text).get("data", [])]

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a LoRA adapter into the running server, to be requested as model ``name``.

        Idempotent: an adapter this object loaded, or one the server reports as already
        loaded, is not loaded again.

        Args:
            name: the model name requests use for it (see :func:`adapter_name`).
            path: the adapter folder (PEFT format), readable by the server.

        Raises:
            ModelError: LoRA is not enabled on this server, runtime loading is not allowed,
                or the server cannot load the adapter.
        """
        folder = str(Path(path).expanduser().resolve()) if Path(path).exists() else str(path)
        with self._lock:
            if name in self._adapters:
                return
            if self.cfg.url is None and not self.cfg.enable_lora:
                raise ModelError(
                    f"cannot serve adapter {folder}: the server of {self.model!r} was started "
                    "with enable_lora false"
                )
            status, text = self._request(
                "POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": folder}
            )
            if status == 200 or (status == 400 and "already" in text.lower()):
                self._adapters[name] = folder
                return
            if status == 404 and "lora" not in text.lower():
                # The route itself is missing: vLLM registers it only when runtime updating
                # is allowed.
                raise ModelError(
                    f"the server at {self.url} does not load adapters at run time: start it "
                    "with --enable-lora and the environment variable "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
                )
            raise ModelError(
                f"the server at {self.url} could not load adapter {folder} onto "
                f"{self.model!r} ({status}): {_message(text)}"
            )

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter from the server; one it does not hold is no error.

        Raises:
            ModelError: the server refuses for another reason.
        """
        with self._lock:
            status, text = self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
            self._adapters.pop(name, None)
            if status == 200 or status == 404:
                return
            raise ModelError(
                f"the server at {self.url} could not unload adapter {name!r} ({status}): "
                f"{_message(text)}"
            )


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The process is its session's leader, so its group id is its pid; the group outlives
    # a leader that exited, which is what lets this reach orphaned workers.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _message(text: str) -> str:
    """The error message of a JSON error body (vLLM's old and new shapes), else the text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return text.strip()[:500]


def _status(message: str) -> None:
    # Starting a server takes minutes; say what is happening instead of going silent.
    print(f"  vllm: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- process pool

_POOL: dict[tuple[str, str], VLLMServer] = {}
_POOL_LOCK = threading.Lock()


def acquire(
    model: str,
    cfg: VLLMServerConfig | None = None,
    *,
    log_dir: Path | None = None,
    api_key: str | None = None,
) -> VLLMServer:
    """A ready server for ``model``: the one this process started for it, else a new one.

    One server per (model, config) per process, so every reference to a base (and all its
    students' adapters) shares the base's weights on the GPU. Servers are stopped by
    :func:`shutdown_all`, which runs at interpreter exit.

    Args:
        model: hub id or local folder of the base model.
        cfg: how to start or find the server.
        log_dir: folder of a started server's log; None: a temporary folder.
        api_key: key of a server that requires one.

    Raises:
        ModelError: the server cannot start (see :meth:`VLLMServer.start`).
    """
    cfg = cfg or VLLMServerConfig()
    key = (model, cfg.model_dump_json())
    # Held while starting, so two threads asking for one base never start two servers.
    with _POOL_LOCK:
        server = _POOL.get(key)
        if server is not None and server.is_running():
            return server
        if server is not None:
            server.stop()  # died or was stopped: clean up its group before replacing it
        server = VLLMServer(model, cfg, log_dir, api_key=api_key)
        server.start()
        _POOL[key] = server
        return server


def shutdown_all() -> None:
    """Stop every server :func:`acquire` started in this process (URL-mode ones are left)."""
    with _POOL_LOCK:
        servers = list(_POOL.values())
        _POOL.clear()
    for server in servers:
        server.stop()


atexit.register(shutdown_all)
