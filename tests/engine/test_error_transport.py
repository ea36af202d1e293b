"""A task's error reaches the runner as itself from every executor: sublearn's errors keep
their type and one-line message; a library's exception that cannot be unpickled (openai's)
arrives described as a TaskError instead of breaking the process pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sublearn.engine.executors import InlineExecutor, ProcessExecutor, TaskError
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.task import Task, TaskContext, register_kind
from sublearn.errors import ProviderError

MESSAGE = "openai:smollm2: cannot reach the server at http://127.0.0.1:9/v1"


def raise_it(ctx: TaskContext) -> dict[str, Any]:
    """The kind ``test.raise``: raise the error its params name."""
    if ctx.params["error"] == "provider":
        raise ProviderError(MESSAGE, "openai:smollm2", "http://127.0.0.1:9/v1")
    import httpx2 as httpx  # the openai client's transport
    import openai

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    raise openai.APIConnectionError(message="Connection error.", request=request)


def _task(error: str) -> Task:
    register_kind("test.raise", f"{__name__}:raise_it", 1)
    return Task("test.raise", f"raise/{error}", params={"error": error})


def test_inline_raises_the_error_itself(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="cannot reach"):
        run_plan([_task("provider")], Store(tmp_path), InlineExecutor(1), show_progress=False)


def test_worker_processes_send_back_the_error_or_its_description(tmp_path: Path) -> None:
    executor = ProcessExecutor(1)  # one worker for both: spawning one costs seconds
    try:
        with pytest.raises(ProviderError) as caught:
            executor.submit(_task("provider").spec(), str(tmp_path), _quiet).result()
        assert str(caught.value) == MESSAGE and caught.value.url == "http://127.0.0.1:9/v1"
        with pytest.raises(TaskError, match="APIConnectionError") as described:
            executor.submit(_task("sdk").spec(), str(tmp_path), _quiet).result()
        assert "raise_it" in str(described.value)  # the worker's traceback, as text
    finally:
        executor.close()


def _quiet(done: int, total: int) -> None:
    return None


@pytest.mark.slow
def test_ray_gives_the_error_not_its_traceback(tmp_path: Path) -> None:
    from sublearn.engine.executors import RayExecutorConfig
    from sublearn.engine.ray_executor import RayExecutor

    executor = RayExecutor(RayExecutorConfig(num_cpus=1))
    with pytest.raises(ProviderError) as caught:
        run_plan([_task("provider")], Store(tmp_path), executor, show_progress=False)
    assert str(caught.value) == MESSAGE
