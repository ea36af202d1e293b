"""The vLLM server launcher, exercised without vLLM: it launches the local test server.

``VLLMServerConfig.command`` replaces vLLM's launch command, so the launcher's own work
(free port, process group, readiness wait, adapters, stop, errors) runs here against
:mod:`tests.support.openai_server`, which answers vLLM's routes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sublearn.backends import vllm_server
from sublearn.backends.vllm_server import (
    VLLMServer,
    VLLMServerConfig,
    acquire,
    adapter_name,
    shutdown_all,
)
from sublearn.errors import ModelError
from tests.support.openai_server import checkout_env


def local_command(workdir: Path) -> list[str]:
    """The local test server, serving the launcher's model under its own name."""
    return [
        "{python}",
        "-m",
        "tests.support.openai_server",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--model",
        "{model}={model}",
        "--workdir",
        str(workdir),
    ]


def local_cfg(tmp: Path, **update: Any) -> VLLMServerConfig:
    # The test server lives in the checkout's tests package, not in sublearn.
    env = {"PYTHONPATH": checkout_env()["PYTHONPATH"]}
    return VLLMServerConfig(
        command=local_command(tmp / "work"), startup_timeout_s=60, env=env, **update
    )


def _ended(pid: int, wait_s: float = 5.0) -> bool:
    """Whether ``pid`` has ended, waiting up to ``wait_s`` for it (zombies have ended)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat")
            # An orphan killed with its group stays a zombie until init reaps it.
            zombie = stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"
        except (ProcessLookupError, FileNotFoundError):
            return True
        if zombie:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def adapters(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three LoRA adapter folders on the micro model (peft format)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(micro_model),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    root = tmp_path_factory.mktemp("adapters")
    folders = [root / f"student-{i}" for i in range(3)]
    for folder in folders:
        peft_model.save_pretrained(str(folder))
    return folders


@pytest.fixture(scope="module")
def server(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """One launched local server shared by the tests that only talk to it."""
    tmp = tmp_path_factory.mktemp("server")
    with VLLMServer(str(micro_model), local_cfg(tmp), log_dir=tmp / "logs") as running:
        yield running


@pytest.fixture
def pool() -> Iterator[None]:
    """Leave no pooled server behind a test, whatever it asserted."""
    yield
    shutdown_all()


def test_started_server_serves_the_model(server: VLLMServer, micro_model: Path) -> None:
    assert server.is_running() and server.pid is not None
    assert server.base_url == server.url + "/v1"
    assert server.url.startswith("http://127.0.0.1:")
    assert str(micro_model) in server.served_models()
    assert server.log_path is not None and server.log_path.is_file()


def test_chat_completion_through_the_openai_client(server: VLLMServer, micro_model: Path) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    response = client.chat.completions.create(
        model=str(micro_model),
        messages=[{"role": "user", "content": "name your favorite animal"}],
        max_tokens=4,
        seed=1,
    )
    assert response.model == str(micro_model)
    assert isinstance(response.choices[0].message.content, str)


def test_adapters_load_once_each_and_unload(server: VLLMServer, adapters: list[Path]) -> None:
    names = [adapter_name(a) for a in adapters]
    assert len(set(names)) == 3
    for name, folder in zip(names, adapters, strict=True):
        server.load_adapter(name, folder)
    assert set(names) <= set(server.served_models())
    assert server.adapters[names[0]] == str(adapters[0].resolve())
    server.load_adapter(names[0], adapters[0])  # known to this object: no request at all
    # Another handle on the same server does not know it is loaded; the server's 400
    # "already been loaded" counts as success.
    other = VLLMServer(server.model, VLLMServerConfig(url=server.url)).start()
    other.load_adapter(names[1], adapters[1])
    assert names[1] in other.adapters

    server.unload_adapter(names[2])
    assert names[2] not in server.served_models()
    server.unload_adapter(names[2])  # not loaded any more: no error
    server.load_adapter(names[2], adapters[2])  # and it loads again
    assert names[2] in server.served_models()


def test_a_folder_that_is_not_an_adapter_is_a_model_error(
    server: VLLMServer, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match=r"could not load adapter .* \(400\): .*adapter_config"):
        server.load_adapter(adapter_name(tmp_path), tmp_path)


def test_adapter_names_are_stable_short_and_distinct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = adapter_name(tmp_path / "a")
    assert name.startswith("lora-") and len(name) == len("lora-") + 12
    monkeypatch.chdir(tmp_path)
    assert adapter_name("a") == name  # relative and absolute paths name one folder
    assert adapter_name(tmp_path / "b") != name


def test_stop_ends_the_process_and_closes_the_port(micro_model: Path, tmp_path: Path) -> None:
    server = VLLMServer(str(micro_model), local_cfg(tmp_path)).start()
    pid, port = server.pid, int(server.url.rsplit(":", 1)[1])
    assert pid is not None and not _ended(pid, 0) and _listening(port)
    server.stop()
    assert _ended(pid)
    assert not _listening(port)
    assert not server.is_running() and server.pid is None
    server.stop()  # idempotent


def test_a_process_that_exits_is_a_model_error_with_its_code_and_log(tmp_path: Path) -> None:
    cfg = VLLMServerConfig(
        command=["{python}", "-c", "import sys; print('boom'); sys.exit(3)"], startup_timeout_s=60
    )
    server = VLLMServer("some/model", cfg, log_dir=tmp_path)
    with pytest.raises(ModelError, match=r"exited with code 3 before it was ready") as info:
        server.start()
    assert "boom" in str(info.value)
    assert str(server.log_path) in str(info.value)
    assert not server.is_running()


def test_a_server_that_never_answers_is_killed_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It ignores SIGTERM, so stop() must fall back to SIGKILL after the grace period; and
    # it has a child of its own (as vLLM has workers), which must end with it.
    monkeypatch.setattr(vllm_server, "_STOP_GRACE_S", 1.0)
    pids = tmp_path / "pids"
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n"
    )
    cfg = VLLMServerConfig(command=["{python}", "-c", code], startup_timeout_s=3)
    with pytest.raises(ModelError, match=r"did not answer within 3 s .* and was stopped"):
        VLLMServer("some/model", cfg, log_dir=tmp_path).start()
    leader, child = (int(p) for p in pids.read_text().split())
    assert _ended(leader)
    assert _ended(child)


def test_without_vllm_and_command_the_error_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = vllm_server.importlib.util.find_spec
    monkeypatch.setattr(
        vllm_server.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "vllm" else real(name, *args),
    )

    def no_launch(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be launched")

    monkeypatch.setattr(vllm_server.subprocess, "Popen", no_launch)
    with pytest.raises(ModelError, match=r"vllm is not installed") as info:
        VLLMServer("org/model", VLLMServerConfig()).start()
    assert "pip install 'sublearn[vllm]'" in str(info.value)
    assert "url" in str(info.value)


def test_the_default_command_carries_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: dict[str, object] = {}
    real_popen = subprocess.Popen

    def fake_popen(args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        launched["args"], launched["env"] = args, kwargs["env"]
        # Stand in for vLLM with a process that exits at once.
        return real_popen([sys.executable, "-c", "raise SystemExit(7)"], **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(vllm_server.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(vllm_server.subprocess, "Popen", fake_popen)
    cfg = VLLMServerConfig(
        tensor_parallel_size=2,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        dtype="bfloat16",
        max_lora_rank=16,
        max_loras=4,
        max_cpu_loras=32,
        seed=5,
        extra_args=["--enforce-eager"],
        env={"CUDA_VISIBLE_DEVICES": "2,3"},
    )
    with pytest.raises(ModelError, match="code 7"):
        VLLMServer("org/model", cfg, log_dir=tmp_path).start()
    args = launched["args"]
    assert isinstance(args, list)
    assert args[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(args)
    for flag in [
        "--model org/model",
        "--host 127.0.0.1",
        "--tensor-parallel-size 2",
        "--gpu-memory-utilization 0.5",
        "--max-model-len 4096",
        "--dtype bfloat16",
        "--seed 5",
        "--enable-lora --max-lora-rank 16",
        "--max-loras 4",
        "--max-cpu-loras 32",
    ]:
        assert flag in joined
    assert args[args.index("--port") + 1].isdigit()
    assert args[-1] == "--enforce-eager"
    env = launched["env"]
    assert isinstance(env, dict)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_a_taken_port_is_refused(server: VLLMServer, tmp_path: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(ModelError, match=rf"port {port} .* already in use.*set url"):
        VLLMServer(server.model, local_cfg(tmp_path, port=port)).start()
    assert server.is_running()


def test_url_mode_starts_nothing_and_never_stops_the_server(
    server: VLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_launch(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be launched in url mode")

    monkeypatch.setattr(vllm_server.subprocess, "Popen", no_launch)
    # A URL copied from a client config (ending in /v1) works too.
    with VLLMServer(server.model, VLLMServerConfig(url=server.base_url + "/")) as found:
        assert found.url == server.url and found.pid is None and found.is_running()
        assert server.model in found.served_models()
    assert not found.is_running()
    assert server.is_running() and server.model in server.served_models()


def test_url_mode_with_no_server_is_a_model_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    cfg = VLLMServerConfig(url=f"http://127.0.0.1:{port}", startup_timeout_s=1)
    with pytest.raises(ModelError, match=r"no server .* answered at .* within 1 s"):
        VLLMServer("org/model", cfg).start()


def test_acquire_shares_one_server_and_shutdown_all_stops_it(
    micro_model: Path, tmp_path: Path, pool: None
) -> None:
    cfg = local_cfg(tmp_path)
    first = acquire(str(micro_model), cfg)
    again = acquire(str(micro_model), VLLMServerConfig(**cfg.model_dump()))  # an equal config
    assert again is first
    pid = first.pid
    assert pid is not None and not _ended(pid, 0)
    shutdown_all()
    assert _ended(pid) and not first.is_running()
