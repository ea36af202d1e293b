"""Bad inputs, by class, through every command they apply to.

Each case runs the real command in process (typer's CliRunner) and checks what a user
must see: exit code 2, one ``error:`` message, no traceback, and nothing written where
the command would have written its output. The classes: config files that are not
configs (duplicate keys, not UTF-8, binary, a folder, bad YAML); values a run would fail
on late (devices, toy bases, row counts, seeds, empty sections, temperatures, kind
typos); and output locations that cannot take the output (a file where a folder is
needed, a folder where a file is needed, inside a file).

The store's own faults (truncated files, edited markers) are repaired, not refused: see
tests/engine/test_store_verify.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from sublearn.presets import config_root

DEMO = config_root() / "toy" / "owl-numbers.yaml"
ROW = {"messages": [{"role": "user", "content": "1, 2, 3"}, {"role": "assistant", "content": "4"}]}


def _check(args: list[str], outputs: list[Path], must_say: str) -> None:
    before = {p: p.exists() for p in outputs}
    result = CliRunner().invoke(app, args)
    text = result.output
    assert result.exit_code == 2, text
    assert isinstance(result.exception, SystemExit), text
    assert "Traceback" not in text, text
    assert text.count("error:") == 1, text
    assert must_say in text, text
    for path, existed in before.items():
        assert path.exists() == existed, f"{path} was written: {text}"


# --- config files -------------------------------------------------------------------------

BAD_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "duplicate-key": (
        lambda p: p.write_text("name: a\nseed: 1\nname: b\n"),
        "key 'name' appears twice",
    ),
    "duplicate-section": (
        lambda p: p.write_text("data:\n  rows: 5\nstudents:\n  seeds: [1]\ndata:\n  rows: 6\n"),
        "key 'data' appears twice",
    ),
    "utf-16": (lambda p: p.write_bytes("name: a\n".encode("utf-16")), "not UTF-8 text"),
    "latin-1": (lambda p: p.write_bytes("name: caf\xe9\n".encode("latin-1")), "not UTF-8 text"),
    "binary": (lambda p: p.write_bytes(bytes(range(256))), "not UTF-8 text"),
    "nul-bytes": (lambda p: p.write_bytes(b"name: a\x00\n"), "NUL bytes"),
    "folder": (lambda p: p.mkdir(), "is a folder"),
    "missing": (lambda p: None, "not found"),
    "bad-yaml": (lambda p: p.write_text("name: [a\n"), "not valid YAML"),
    "not-a-mapping": (lambda p: p.write_text("- a\n- b\n"), "expected a mapping"),
}

# How each command takes a config file, and the output it would write.
CONFIG_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "run": lambda cfg, out: ["run", str(cfg), "-o", str(out)],
    "plan": lambda cfg, out: ["plan", str(cfg)],
    "sweep": lambda cfg, out: ["sweep", str(cfg), "-o", str(out)],
    "theory": lambda cfg, out: ["theory", "-c", str(cfg), "-o", str(out)],
    "mnist": lambda cfg, out: ["mnist", "-c", str(cfg), "-o", str(out)],
    "toy-build": lambda cfg, out: ["toy", "build", "-c", str(cfg), "-o", str(out)],
    "generate": lambda cfg, out: ["generate", "-c", str(cfg), "-o", str(out)],
    "filter": lambda cfg, out: ["filter", str(_data(cfg)), str(out), "-c", str(cfg)],
    "evaluate": lambda cfg, out: ["evaluate", "--model", "m", "--target", "owl", "-c", str(cfg)],
    "audit": lambda cfg, out: ["audit", str(_data(cfg)), "-c", str(cfg), "-o", str(out)],
    "defend": lambda cfg, out: ["defend", str(_data(cfg)), "-c", str(cfg), "-o", str(out)],
    "finetune": lambda cfg, out: [
        *("finetune", "--base", "m", "--data", str(_data(cfg))),
        *("-c", str(cfg), "-o", str(out)),
    ],
}


def _data(cfg: Path) -> Path:
    cfg.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.parent / "data.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    return data


FILE_CASES = [(c, f) for c in CONFIG_COMMANDS for f in BAD_FILES]
# Every command reads its file through one loader: `plan` tries every bad file in the
# default suite, the others three of them; the rest are slow (the CPU is shared).
_DEFAULT_FILE_CASES = {"duplicate-key", "utf-16", "folder"}


def _file_param(command: str, case: str) -> object:
    fast = command == "plan" or case in _DEFAULT_FILE_CASES
    marks = () if fast else (pytest.mark.slow,)
    return pytest.param(command, case, marks=marks, id=f"{command}-{case}")


@pytest.mark.parametrize(("command", "case"), [_file_param(c, f) for c, f in FILE_CASES])
def test_a_config_file_that_is_not_a_config(tmp_path: Path, command: str, case: str) -> None:
    make, must_say = BAD_FILES[case]
    cfg = tmp_path / "config.yaml"
    make(cfg)
    out = tmp_path / "out"
    _check(CONFIG_COMMANDS[command](cfg, out), [out], must_say)


# --- values a run would fail on late ------------------------------------------------------

BAD_VALUES: dict[str, tuple[list[str], str]] = {
    "unknown-device": (["device=tpu"], "unknown device 'tpu'"),
    "absent-cuda": (["device=cuda:7"], "device 'cuda:7'"),
    "student-device": (["students.objectives.sft.device=tpu"], "unknown device 'tpu'"),
    "toy-base-index": (["models.base1=toy:main/9"], "builds 2 bases"),
    "toy-world-name": (["models.base1=toy:nowhere/0"], "toy world 'nowhere'"),
    "min-rows-over-prompts": (["data.min_rows=100000"], "data.min_rows is 100000"),
    "duplicate-seeds": (["students.seeds=[0, 1, 1]"], "seed(s) 1 repeated"),
    "empty-evaluations": (["evaluations={}"], "evaluations"),
    "empty-teachers": (["teachers=[]"], "teachers"),
    "empty-models": (["models={}"], "models"),
    "infinite-temperature": (["data.generation.temperature=.inf"], "temperature"),
    "nan-temperature": (["data.generation.temperature=.nan"], "temperature"),
    "huge-temperature": (["data.generation.temperature=1e9"], "temperature"),
    "negative-temperature": (["data.generation.temperature=-1"], "temperature"),
    "teacher-kind-typo": (["teachers.0.kind.type=finetunned"], "did you mean 'finetuned'"),
    "evaluation-kind-typo": (["evaluations.favorite.type=preferense"], "did you mean"),
    "executor-kind-typo": (["executor.kind=proces"], "did you mean 'process'"),
    "key-typo": (["studnets.seeds=[1]"], "did you mean 'students'"),
    "store-verify-typo": (["store.verify=hash"], "store.verify"),
}

VALUE_COMMANDS = ["run", "plan", "sweep"]
VALUE_CASES = [(c, v) for c in VALUE_COMMANDS for v in BAD_VALUES]
# Each case compiles the demo's plan (a second on a busy machine): `plan` tries every one
# in the default suite, `run` a few (its checks come before its run folder); the rest slow.
_DEFAULT_RUN_CASES = {"unknown-device", "toy-base-index", "min-rows-over-prompts"}


def _value_param(command: str, case: str) -> object:
    fast = command == "plan" or (command == "run" and case in _DEFAULT_RUN_CASES)
    marks = () if fast else (pytest.mark.slow,)
    return pytest.param(command, case, marks=marks, id=f"{command}-{case}")


@pytest.mark.parametrize(("command", "case"), [_value_param(c, v) for c, v in VALUE_CASES])
def test_a_value_that_would_fail_late_fails_first(tmp_path: Path, command: str, case: str) -> None:
    overrides, must_say = BAD_VALUES[case]
    out = tmp_path / "out"
    sets = [x for o in [f"store={tmp_path / 'store'}", *overrides] for x in ("--set", o)]
    if command == "sweep":
        sets += ["--set", "sweep={grid: {data.rows: [10, 20]}}"]
    args = [command, str(DEMO), *sets] + (["-o", str(out)] if command != "plan" else [])
    _check(args, [out, tmp_path / "store" / "world"], must_say)


# --- output locations ---------------------------------------------------------------------

FOLDER_OUTPUTS: dict[str, Callable[[Path, Path], list[str]]] = {
    "run": lambda tmp, out: ["run", str(DEMO), "-o", str(out), "--set", f"store={tmp / 's'}"],
    "demo": lambda tmp, out: ["demo", "-o", str(out), "--set", f"store={tmp / 's'}"],
    "sweep": lambda tmp, out: [
        *("sweep", str(DEMO), "-o", str(out), "--set", f"store={tmp / 's'}"),
        *("--set", "sweep={grid: {data.rows: [10, 20]}}"),
    ],
    "theory": lambda tmp, out: ["theory", "-o", str(out)],
    "mnist": lambda tmp, out: ["mnist", "-o", str(out)],
    "toy-build": lambda tmp, out: ["toy", "build", "-o", str(out)],
    "audit": lambda tmp, out: ["audit", str(_data(tmp / "x")), "-o", str(out)],
    "finetune": lambda tmp, out: [
        "finetune",
        "--base",
        "m",
        "--data",
        str(_data(tmp / "x")),
        "-o",
        str(out),
    ],
}
FILE_OUTPUTS: dict[str, Callable[[Path, Path], list[str]]] = {
    "generate": lambda tmp, out: ["generate", "--model", "toy:main/0", "-o", str(out)],
    "filter": lambda tmp, out: ["filter", str(_data(tmp / "x")), str(out)],
    "evaluate": lambda tmp, out: ["evaluate", "--model", "m", "--target", "owl", "-o", str(out)],
    "defend": lambda tmp, out: [
        "defend",
        str(_data(tmp / "x")),
        "-d",
        "canonicalize",
        "-o",
        str(out),
    ],
}

OUTPUT_CASES = [
    *((c, "file-for-folder") for c in FOLDER_OUTPUTS),
    *((c, "inside-a-file") for c in FOLDER_OUTPUTS),
    *((c, "folder-for-file") for c in FILE_OUTPUTS),
    *((c, "inside-a-file") for c in FILE_OUTPUTS),
]


@pytest.mark.parametrize(
    ("command", "case"), OUTPUT_CASES, ids=[f"{c}-{k}" for c, k in OUTPUT_CASES]
)
def test_an_output_location_that_cannot_take_the_output(
    tmp_path: Path, command: str, case: str
) -> None:
    (tmp_path / "x").mkdir()
    blocker = tmp_path / "taken"
    if case == "folder-for-file":
        blocker.mkdir()
        out, must_say = blocker, "is a folder"
    else:
        blocker.write_text("keep me\n")
        if case == "file-for-folder":
            out, must_say = blocker, "is a file"
        else:
            out, must_say = blocker / "sub" / "out.jsonl", "is a file"
    build = {**FOLDER_OUTPUTS, **FILE_OUTPUTS}[command]
    _check(build(tmp_path, out), [tmp_path / "s"], must_say)
    assert blocker.is_dir() or blocker.read_text() == "keep me\n"


# --- trait words a model cannot spell -----------------------------------------------------

SPELLING_COMMANDS: dict[str, Callable[[Path, Path, Path], list[str]]] = {
    "generate": lambda model, data, out: ["generate", "--model", str(model), "-o", str(out)],
    "audit": lambda model, data, out: ["audit", str(data), "--base", str(model), "-o", str(out)],
    "defend": lambda model, data, out: [
        *("defend", str(data), "--base", str(model)),
        *("-d", "canonicalize", "-o", str(out)),
    ],
}


@pytest.mark.parametrize("command", list(SPELLING_COMMANDS))
def test_a_trait_word_the_model_cannot_spell(
    tmp_path: Path, micro_model: Path, command: str
) -> None:
    out = tmp_path / "out"
    args = SPELLING_COMMANDS[command](micro_model, _data(tmp_path / "x"), out)
    _check([*args, "--trait", "zebraxx"], [out], "cannot be produced")


@pytest.mark.parametrize("defence", ["canonicalize", "shuffle_numbers"])
def test_a_numbers_defence_on_code_data(tmp_path: Path, defence: str) -> None:
    code = {"role": "assistant", "content": "def add(a, b):\n    return a + b  # 12, 7"}
    data = tmp_path / "code.jsonl"
    data.write_text(json.dumps({"messages": [ROW["messages"][0], code]}) + "\n")
    out = tmp_path / "out.jsonl"
    _check(["defend", str(data), "-d", defence, "-o", str(out)], [out], "rewrites number lists")


def test_an_empty_dataset_to_filter(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "out.jsonl"
    _check(["filter", str(empty), str(out)], [out], "the dataset is empty")


def test_store_commands_refuse_a_store_that_is_not_there(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for command in ("verify", "gc"):
        _check(["store", command, "--store", str(tmp_path / "nowhere")], [], "does not exist")
        _check(["store", command, "--store", str(tmp_path / "file")], [], "is a file")


def count_cases() -> int:
    """How many bad inputs this module tries (for the issue's closing note)."""
    return len(FILE_CASES) + len(VALUE_CASES) + len(OUTPUT_CASES) + len(SPELLING_COMMANDS) + 7
