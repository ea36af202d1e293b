"""A verified store: a finished task whose files were cut, deleted or edited is found,
moved aside and recomputed, and the rerun leaves what an uninterrupted run leaves.

Also: a full disk removes the temporary output and says how much was written, and the
``sublearn store verify`` / ``gc`` commands.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from sublearn.engine.executors import InlineExecutor
from sublearn.engine.runner import plan_status, run_plan
from sublearn.engine.store import DONE, CorruptEntryWarning, Store
from sublearn.engine.task import Task, TaskContext, register_kind
from sublearn.errors import StoreError
from tests.engine.graph_script import Run, build_graph, leftovers, snapshot

NAME_TO_TASK = {"a": 0, "b": 1, "c": 2, "d": 3}


def _tasks() -> dict[str, Task]:
    from sublearn.engine.task import topological

    return {t.name: t for t in topological(build_graph())}


def _copy_reference(reference: Run, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "store"
    shutil.copytree(reference[0].root, root)
    return root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _delete(path: Path) -> None:
    path.unlink()


def _edit_marker(path: Path) -> None:
    marker = json.loads(path.read_text())
    marker["result"]["value"] = 99  # still valid JSON, still a plausible marker
    path.write_text(json.dumps(marker, indent=2))


def _rerun(root: Path, verify: Any = None) -> tuple[Store, dict, list[str]]:
    store = Store(root, verify=verify)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = run_plan(build_graph(), store, InlineExecutor(1), show_progress=False)
    said = [str(w.message) for w in caught if issubclass(w.category, CorruptEntryWarning)]
    return store, records, said


CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("truncated-jsonl", "a", lambda f: _truncate(f / "data" / "rows.jsonl"), "data/rows.jsonl"),
    ("deleted-file", "b", lambda f: _delete(f / "value.json"), "value.json is missing"),
    ("edited-done-json", "c", lambda f: _edit_marker(f / DONE), "done.json was edited"),
    ("cut-done-json", "d", lambda f: _truncate(f / DONE), "not valid JSON"),
]


@pytest.mark.parametrize(("case", "name", "damage", "said"), CASES, ids=[c[0] for c in CASES])
def test_a_damaged_entry_is_reported_moved_aside_and_recomputed(
    tmp_path: Path,
    reference: Run,
    case: str,
    name: str,
    damage: Callable[[Path], None],
    said: str,
) -> None:
    root = _copy_reference(reference, tmp_path)
    task = _tasks()[name]
    damage(root / task.id)
    assert not dict((t.name, done) for t, done in plan_status(build_graph(), Store(root)))[name]

    store, records, messages = _rerun(root)

    assert len(messages) == 1 and task.id in messages[0] and said in messages[0]
    assert store.repaired == messages
    # Only the damaged task ran again: the others (downstream too) verified and were reused.
    assert {r.name: r.cached for r in records.values()} == {n: n != name for n in NAME_TO_TASK}
    assert {r.name: r.result for r in records.values()} == {
        r.name: r.result for r in reference[1].values()
    }
    assert snapshot(root) == snapshot(reference[0].root)
    assert leftovers(root) == []
    aside = list((root / task.kind).glob(f".{task.key}.corrupt-*"))
    assert len(aside) == 1


def test_a_same_size_edit_is_caught_by_hashes_only(tmp_path: Path, reference: Run) -> None:
    root = _copy_reference(reference, tmp_path)
    task = _tasks()["b"]
    value = root / task.id / "value.json"
    value.write_text(value.read_text().replace("2", "7"))  # same length

    _, records, messages = _rerun(root, verify="sizes")
    assert messages == [] and all(r.cached for r in records.values())

    _, records, messages = _rerun(root, verify="hashes")
    assert len(messages) == 1 and "value.json has changed" in messages[0]
    assert snapshot(root) == snapshot(reference[0].root)
    # "none" checks nothing at all: even a deleted file passes.
    (root / task.id / "value.json").unlink()
    assert Store(root, verify="none").usable(task.id)


def test_markers_without_a_file_list_are_trusted(tmp_path: Path, reference: Run) -> None:
    root = _copy_reference(reference, tmp_path)
    task = _tasks()["a"]
    marker = json.loads((root / task.id / DONE).read_text())
    for field in ("files", "marker_sha256"):
        del marker[field]
    (root / task.id / DONE).write_text(json.dumps(marker))
    assert Store(root).problem(task.id) is None


# A weights file: written by one kind, read (with safetensors) by the next.


def run_weights(ctx: TaskContext) -> dict[str, Any]:
    """Write a small safetensors file; fail with ENOSPC after writing it if asked."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(ctx.params["seed"])
    save_file({"w": torch.randn(64, 64)}, str(ctx.out / "model.safetensors"))
    if ctx.params.get("disk_full"):
        raise OSError(errno.ENOSPC, "No space left on device", str(ctx.out / "more.bin"))
    return {}


def run_read_weights(ctx: TaskContext) -> dict[str, Any]:
    """Read the input's weights (a cut file fails in safetensors) and record their sum."""
    from safetensors.torch import load_file

    total = float(load_file(str(ctx.inputs["model"] / "model.safetensors"))["w"].sum())
    (ctx.out / "sum.json").write_text(json.dumps({"sum": round(total, 4)}))
    return {"sum": round(total, 4)}


register_kind("test.weights", f"{__name__}:run_weights", 1)
register_kind("test.read_weights", f"{__name__}:run_read_weights", 1)


def _weights_graph(**params: Any) -> list[Task]:
    weights = Task("test.weights", "weights", {"seed": 3, **params})
    return [Task("test.read_weights", "read", {}, inputs={"model": weights})]


def test_truncated_weights_are_recomputed_and_their_reader_reused(tmp_path: Path) -> None:
    first = run_plan(_weights_graph(), Store(tmp_path), InlineExecutor(1), show_progress=False)
    weights = _weights_graph()[0].inputs["model"]
    _truncate(tmp_path / weights.id / "model.safetensors")

    store = Store(tmp_path)
    with pytest.warns(CorruptEntryWarning, match="model.safetensors has"):
        again = run_plan(_weights_graph(), store, InlineExecutor(1), show_progress=False)

    assert {r.name: r.cached for r in again.values()} == {"weights": False, "read": True}
    assert {i: r.result for i, r in again.items()} == {i: r.result for i, r in first.items()}
    assert store.problem(weights.id, verify="hashes") is None


def test_a_full_disk_removes_the_temporary_output_and_says_how_much_was_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(StoreError, match=r"no space left .* had written 16\.\d KiB") as caught:
        run_plan(
            _weights_graph(disk_full=True), Store(tmp_path), InlineExecutor(1), show_progress=False
        )
    assert "weights" in str(caught.value)
    assert list(tmp_path.glob("*/.*.tmp-*")) == []


# The commands.


def test_store_verify_lists_corrupt_entries_and_fix_moves_them_aside(
    tmp_path: Path, reference: Run
) -> None:
    root = _copy_reference(reference, tmp_path)
    task = _tasks()["a"]
    _truncate(root / task.id / "steps.json")
    runner = CliRunner()

    result = runner.invoke(app, ["store", "verify", "--store", str(root)])
    assert result.exit_code == 1
    assert f"corrupt  {task.id}: steps.json has" in result.output
    assert "3 of 4 entries verify" in result.output

    with pytest.warns(CorruptEntryWarning):
        result = runner.invoke(app, ["store", "verify", "--store", str(root), "--fix"])
    assert result.exit_code == 1 and not (root / task.id).exists()
    result = runner.invoke(app, ["store", "verify", "--store", str(root)])
    assert result.exit_code == 0, result.output

    missing = runner.invoke(app, ["store", "verify", "--store", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_store_gc_lists_then_removes_only_what_no_run_needs(tmp_path: Path, reference: Run) -> None:
    root = _copy_reference(reference, tmp_path)
    tasks = _tasks()
    kept = [tasks[n] for n in ("a", "b", "c")]  # d is referenced by no run
    runs = tmp_path / "runs" / "one"
    runs.mkdir(parents=True)
    manifest = {"store": str(root), "tasks": [{"kind": t.kind, "key": t.key} for t in kept]}
    (runs / "manifest.json").write_text(json.dumps(manifest))
    dead = root / "debug.write" / f".{tasks['a'].key}.tmp-999999999"
    dead.mkdir()
    (dead / "half.json").write_text("{")
    corrupt = root / "debug.sum" / f".{tasks['c'].key}.corrupt-20260101T000000-1"
    corrupt.mkdir()
    running = root / "debug.write" / f".{tasks['b'].key}.tmp-{os.getpid()}"
    running.mkdir()
    runner = CliRunner()
    args = ["store", "gc", "--store", str(root), "--runs", str(tmp_path / "runs")]

    with Store(root).lock(tasks["b"].id):  # b's task is being worked on: its tmp stays
        listed = runner.invoke(app, args)
        assert listed.exit_code == 0, listed.output
        assert "3 paths" in listed.output and "pass --yes" in listed.output
        assert dead.exists() and corrupt.exists() and (root / tasks["d"].id).exists()

        removed = runner.invoke(app, [*args, "--yes"])

    assert removed.exit_code == 0, removed.output
    assert not dead.exists() and not corrupt.exists() and not (root / tasks["d"].id).exists()
    assert running.exists()
    assert all((root / t.id / DONE).is_file() for t in kept)


def test_the_store_config_has_a_short_form_that_overrides_extend() -> None:
    from sublearn.config import load_config
    from sublearn.experiments.numbers.config import ExperimentConfig
    from sublearn.presets import config_root

    demo = config_root() / "toy" / "owl-numbers.yaml"
    cfg = load_config(ExperimentConfig, demo, ["store.verify=hashes"])
    assert (cfg.store.path, cfg.store.verify) == (".cache/store", "hashes")
    for overrides in (["store=/x", "store.verify=none"], ["store.verify=none", "store=/x"]):
        cfg = load_config(ExperimentConfig, demo, overrides)
        assert (os.fspath(cfg.store), cfg.store.verify) == ("/x", "none")
    assert Store(cfg.store).verify == "none"
