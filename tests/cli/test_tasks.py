"""``mnist``, ``theory``, ``audit`` and ``defend`` run as engine tasks: stored, reused, planned.

Each command's second identical call finds its task in the store (the done-marker is
not rewritten, the command says so) and writes the same files; a file given by another
path with the same content is the same task; ``--plan`` shows the task and runs nothing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app

MNIST = ["mnist", "--models", "2", "--device", "cpu", "-s", "teacher_steps=3"]
MNIST += ["-s", "student_steps=3", "-s", "hidden=[16]"]
THEORY = ["theory", "-s", "n_draws=3", "-s", "multistep.n_draws=1"]
THEORY += ["-s", "multistep.student_steps=3", "-s", "multistep.teacher_steps=3"]


def _invoke(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _markers(store: Path) -> dict[Path, int]:
    """Every done-marker in the store with its modification time."""
    return {p: p.stat().st_mtime_ns for p in store.rglob("done.json")}


def _files(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def _rows(path: Path, n: int, seed: int, favored: list[int]) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        nums = [rng.choice(favored) if rng.random() < 0.5 else rng.randint(0, 99) for _ in range(5)]
        messages = [
            {"role": "user", "content": "continue the sequence 1, 2, 3"},
            {"role": "assistant", "content": ", ".join(map(str, nums))},
        ]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mnist_is_one_stored_task_reused_by_an_identical_call(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = _invoke(*MNIST, "--threads", "1", "--store", store, "-o", tmp_path / "a")
    assert "found in the store" not in first
    markers = _markers(store)
    assert [p.parent.parent.name for p in markers] == ["mnist"]
    # Threads are a speed setting: another count is the same task.
    again = _invoke(*MNIST, "--threads", "2", "--store", store, "-o", tmp_path / "b")
    assert "found in the store" in again and "Test accuracy over 2 models" in again
    assert _markers(store) == markers  # not recomputed
    names = ["summary.json", "per_model.csv", "timing.json", "accuracy.png", "curves.jsonl"]
    assert _files(tmp_path / "a", names) == _files(tmp_path / "b", names)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["store"] == str(store) and manifest["tasks"][0]["cached"] is True
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["command"] == "sublearn mnist"
    # A setting that matters is another task; --plan shows it and runs nothing.
    planned = _invoke(*MNIST, "-s", "seed=1", "--store", store, "--plan")
    assert "will run" in planned and "0 of 1 tasks cached" in planned
    assert _markers(store) == markers
    assert "1 of 1 tasks cached" in _invoke(*MNIST, "--store", store, "--plan")


def test_theory_is_one_stored_task_reused_by_an_identical_call(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _invoke(*THEORY, "--store", store, "-o", tmp_path / "a")
    markers = _markers(store)
    assert [p.parent.parent.name for p in markers] == ["theory"]
    again = _invoke(*THEORY, "-s", "threads=2", "--store", store, "-o", tmp_path / "b")
    assert "found in the store" in again and "Theorem 1 on 3 random draws" in again
    assert _markers(store) == markers
    names = ["summary.json", "draws.csv", "multistep.csv", "theory.png"]
    assert _files(tmp_path / "a", names) == _files(tmp_path / "b", names)
    assert (tmp_path / "b" / "config.yaml").is_file()


def test_audit_is_keyed_by_file_content_not_path(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = _rows(tmp_path / "data.jsonl", 40, 0, [7, 77])
    control = _rows(tmp_path / "control.jsonl", 40, 1, list(range(100)))
    args = ["--control", control, "--detector", "frequency", "--store", store]
    _invoke("audit", data, *args, "-o", tmp_path / "a")
    markers = _markers(store)
    assert [p.parent.parent.name for p in markers] == ["audit"]
    moved = tmp_path / "elsewhere" / "copy.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(data.read_bytes())
    again = _invoke("audit", moved, *args, "-o", tmp_path / "b")
    assert "found in the store" in again and "frequency" in again
    assert _markers(store) == markers
    first = json.loads((tmp_path / "a" / "audit.json").read_text())
    second = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert first["verdicts"] == second["verdicts"] and first["flagged"] == ["frequency"]
    # Each report names the file its call audited, and where it was written.
    assert second["config"]["data"] == str(moved) and first["config"]["data"] == str(data)
    assert second["config"]["out"] == str(tmp_path / "b")
    markdown = (tmp_path / "b" / "audit.md").read_text()
    assert markdown.startswith(f"# Audit of {moved}\n") and f"- control: {control}\n" in markdown
    # Other content at the same path is another task.
    _rows(data, 40, 2, [7, 77])
    assert "will run" in _invoke("audit", data, *args, "-o", tmp_path / "a", "--plan")


def test_defend_is_one_task_per_input_reused_by_an_identical_call(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = _rows(tmp_path / "data.jsonl", 12, 0, [7])
    out_a, out_b = tmp_path / "a" / "clean.jsonl", tmp_path / "b" / "clean.jsonl"
    args = ["-d", "mask_random", "-s", "defences.0.fraction=0.3", "--store", store]
    first = _invoke("defend", data, *args, "-o", out_a)
    assert "12 of 12 rows" in first
    markers = _markers(store)
    assert [p.parent.parent.name for p in markers] == ["defend-file"]
    again = _invoke("defend", data, *args, "-o", out_b)
    assert "found in the store" in again and "mask_random" in again
    assert _markers(store) == markers
    assert out_a.read_bytes() == out_b.read_bytes()
    report = json.loads(Path(f"{out_b}.report.json").read_text())
    assert report["rows_out"] == 12 and report["characters_masked"] > 0
    assert report["out"] == report["config"]["out"] == str(out_b)  # this call's, not the first's
    other = _invoke("defend", data, *args, "-s", "defences.0.seed=5", "-o", out_a, "--plan")
    assert "will run" in other


@pytest.mark.parametrize("command", ["audit", "defend"])
def test_an_input_edited_after_planning_is_refused(tmp_path: Path, command: str) -> None:
    from sublearn.audit.config import AuditConfig, FrequencyDetector
    from sublearn.audit.task import audit_task
    from sublearn.cli.tasks import open_store, run_tasks
    from sublearn.defend.config import CanonicalizeDefence, DefendConfig
    from sublearn.defend.task import defend_task
    from sublearn.errors import DataError

    data = _rows(tmp_path / "data.jsonl", 20, 0, [7])
    if command == "audit":
        control = _rows(tmp_path / "control.jsonl", 20, 1, [8])
        cfg = AuditConfig(
            data=str(data), control=str(control), detectors=[FrequencyDetector(type="frequency")]
        )
        task = audit_task(cfg)
    else:
        cfg = DefendConfig(
            data=str(data),
            out=str(tmp_path / "o.jsonl"),
            defences=[CanonicalizeDefence(type="canonicalize")],
        )
        task = defend_task(cfg)
    _rows(data, 20, 3, [9])  # edited between planning and running
    store = open_store(tmp_path / "store")
    with pytest.raises(DataError, match="inputs changed since it was planned"):
        run_tasks([task], store, 1, progress=False)
    assert _markers(tmp_path / "store") == {}


# --- the files are what the commands wrote before they ran as tasks ------------------------


def test_mnist_writes_what_run_experiment_writes(tmp_path: Path) -> None:
    from sublearn.experiments.mnist.config import MnistConfig
    from sublearn.experiments.mnist.experiment import run_experiment

    _invoke(*MNIST, "--threads", "1", "--store", tmp_path / "store", "-o", tmp_path / "task")
    cfg = MnistConfig(
        n_models=2, device="cpu", threads=1, teacher_steps=3, student_steps=3, hidden=[16]
    )
    run_experiment(cfg, tmp_path / "direct")
    for name in ("summary.json", "per_model.csv", "curves.jsonl", "config.yaml"):
        assert (tmp_path / "task" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()


def test_theory_writes_what_its_run_writes(tmp_path: Path) -> None:
    from sublearn.config import load_config
    from sublearn.experiments.theory.config import TheoryConfig
    from sublearn.experiments.theory.experiment import run

    _invoke(*THEORY, "--store", tmp_path / "store", "-o", tmp_path / "task")
    run(load_config(TheoryConfig, None, THEORY[2::2]), tmp_path / "direct")
    for name in ("draws.csv", "multistep.csv", "config.yaml"):
        assert (tmp_path / "task" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()
    task = json.loads((tmp_path / "task" / "summary.json").read_text())
    direct = json.loads((tmp_path / "direct" / "summary.json").read_text())
    assert task.pop("wall_seconds") > 0 and direct.pop("wall_seconds") > 0
    assert task == direct


def test_audit_and_defend_write_what_their_functions_write(tmp_path: Path) -> None:
    from sublearn.audit.config import AuditConfig, FrequencyDetector
    from sublearn.audit.run import run_audit
    from sublearn.defend.config import DefendConfig, MaskRandomDefence
    from sublearn.defend.run import run_defences

    data = _rows(tmp_path / "data.jsonl", 30, 0, [7, 77])
    control = _rows(tmp_path / "control.jsonl", 30, 1, list(range(100)))
    out = tmp_path / "audit"
    _invoke("audit", data, "--control", control, "--detector", "frequency", "-o", out,
            "--store", tmp_path / "store")  # fmt: skip
    direct = AuditConfig(
        data=str(data),
        control=str(control),
        detectors=[FrequencyDetector(type="frequency")],
        out=str(tmp_path / "direct"),
    )
    verdicts = [v.to_dict() for v in run_audit(direct)]
    assert json.loads((out / "audit.json").read_text())["verdicts"] == verdicts

    clean = tmp_path / "clean.jsonl"
    _invoke("defend", data, "-d", "mask_random", "-o", clean, "--store", tmp_path / "store")
    cfg = DefendConfig(
        data=str(data),
        out=str(tmp_path / "direct.jsonl"),
        defences=[MaskRandomDefence(type="mask_random")],
    )
    run_defences(cfg)
    assert clean.read_bytes() == (tmp_path / "direct.jsonl").read_bytes()
    report = json.loads(Path(f"{clean}.report.json").read_text())
    assert report["out"] == str(clean) and report["data"] == str(data)


def test_theory_on_a_language_model_is_one_stored_task(micro_model: Path, tmp_path: Path) -> None:
    model, store = tmp_path / "model", tmp_path / "store"
    shutil.copytree(micro_model, model)
    args: list[str | Path] = ["theory", "--model", model, "--store", store]
    for key, value in dict(n_batches=2, batch_size=1, answer_count=3, eval_questions=2).items():
        args += ["-s", f"{key}={value}"]
    args += ["-s", "lead_in=the", "-s", "teacher.steps=1"]
    planned = _invoke(*args, "--plan", "-o", tmp_path / "p")
    assert "theory-lm" in planned and "0 of 1 tasks cached" in planned
    assert _markers(store) == {}
    _invoke(*args, "-s", "threads=1", "-o", tmp_path / "a")
    markers = _markers(store)
    assert [p.parent.parent.name for p in markers] == ["theory-lm"]
    # Threads are a speed setting: another count is the same task, copied, not rerun.
    again = _invoke(*args, "-s", "threads=2", "-o", tmp_path / "b")
    assert "found in the store" in again and "cos(trait step, trait teacher - base)" in again
    assert _markers(store) == markers
    names = ["summary.json", "batches.csv"]
    assert _files(tmp_path / "a", names) == _files(tmp_path / "b", names)
    assert (tmp_path / "b" / "config.yaml").is_file()
    # The weights are in the key: the folder rebuilt in place is another task.
    for weights in model.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes())
        os.utime(weights, ns=(1, 1))
    assert "0 of 1 tasks cached" in _invoke(*args, "--plan", "-o", tmp_path / "q")


def test_the_commands_store_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sublearn.cli.tasks import STORE_ENV, open_store

    monkeypatch.setenv(STORE_ENV, str(tmp_path / "env-store"))
    assert open_store(None).root.resolve() == (tmp_path / "env-store").resolve()
    assert open_store(tmp_path / "given").root.resolve() == (tmp_path / "given").resolve()
    monkeypatch.delenv(STORE_ENV)
    assert open_store(None).root.resolve() == Path(".cache/store").resolve()
