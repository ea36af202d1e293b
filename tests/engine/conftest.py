"""The engine's tests use the debug kinds; shared fixture: the debug graph run once,
uninterrupted, by the inline executor."""

from __future__ import annotations

import pytest

from sublearn.engine.executors import InlineExecutor
from tests.engine.graph_script import Run, run_graph
from tests.support import debug_kinds

debug_kinds.register()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The store and records of an uninterrupted inline run: what every other run must equal."""
    return run_graph(tmp_path_factory.mktemp("reference") / "store", InlineExecutor(1))
