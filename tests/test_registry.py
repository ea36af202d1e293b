"""The registry type: lazy entries, checked types, did-you-mean; the registries built on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sublearn.engine.executors import EXECUTORS, InlineExecutor, InlineExecutorConfig
from sublearn.engine.task import KINDS, Task
from sublearn.errors import ConfigError
from sublearn.evaluation.kinds import EVALUATIONS
from sublearn.prompts.kinds import PROMPT_ROWS
from sublearn.registry import Registry, load_target


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module nobody has imported yet, with a function and a number in it."""
    name = f"h19_plugin_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text("def hello():\n    return 'hi'\n\nNUMBER = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_an_entry_is_imported_on_first_use_only(plugin: str) -> None:
    reg: Registry = Registry("greeting")
    reg.register("hello", f"{plugin}:hello", version=2)
    assert plugin not in sys.modules
    assert reg.metadata("hello")["version"] == 2  # without importing
    assert reg.target("hello") == f"{plugin}:hello"
    assert plugin not in sys.modules
    assert reg.get("hello")() == "hi"
    assert plugin in sys.modules


def test_a_wrong_type_is_refused_on_load(plugin: str) -> None:
    reg: Registry = Registry("greeting", expected="a function")
    reg.register("number", f"{plugin}:NUMBER")
    with pytest.raises(TypeError, match="greeting 'number' is int 3, not a function"):
        reg.get("number")
    with pytest.raises(TypeError, match="not a function"):
        reg.register("now", 4)


def test_an_unknown_name_says_the_closest_and_the_known_ones() -> None:
    reg: Registry = Registry("executor")
    reg.register("process", "os:getpid")
    reg.register("inline", "os:getcwd")
    with pytest.raises(ConfigError, match=r"unknown executor 'proces'; did you mean 'process'\? "):
        reg.get("proces")
    with pytest.raises(ConfigError, match=r"unknown executor 'x' \(known: process, inline\)"):
        reg.metadata("x")


def test_objects_and_decorators_register_by_their_importable_name() -> None:
    reg: Registry = Registry("function")

    @reg("tgt")
    def local() -> None: ...

    reg.register("load", load_target)
    assert reg.target("load") == "sublearn.registry:load_target"
    assert reg.target("tgt") is None  # a closure has no importable name
    assert reg.get("tgt") is local
    copy = reg.copy()
    copy.unregister("load")
    assert list(copy) == ["tgt"] and list(reg) == ["tgt", "load"]


def test_load_target_takes_module_colon_attribute() -> None:
    assert load_target("os.path:join") is __import__("os").path.join
    with pytest.raises(ValueError, match="module:attribute"):
        load_target("os.path.join")


def test_the_package_registries_load_every_entry() -> None:
    for registry in (KINDS, EXECUTORS, EVALUATIONS, PROMPT_ROWS):
        for name in registry:
            if name == "ray":  # imports Ray; its executor has its own tests
                continue
            assert callable(registry.get(name))
    assert isinstance(EXECUTORS.get("inline")(InlineExecutorConfig(), 1), InlineExecutor)
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        Task("trian", "t", {})
