"""user_errors: what a user can fix exits with code 2 and one message; bugs keep tracebacks."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable

import pytest
import typer
from typer.testing import CliRunner

from sublearn.cli.options import UserError, user_errors
from sublearn.errors import DataError, DeviceError, StoreError, SublearnError


def run_raising(raise_it: Callable[[], None]) -> tuple[int, str, BaseException | None]:
    """Exit code, output and exception of a one-command app that calls ``raise_it``."""
    app = typer.Typer()

    @app.command()
    def go() -> None:
        with user_errors():
            raise_it()

    result = CliRunner().invoke(app, [])
    return result.exit_code, result.output, result.exception


def _raise(err: BaseException) -> Callable[[], None]:
    def go() -> None:
        raise err

    return go


@pytest.mark.parametrize(
    "err",
    [
        DataError("data.jsonl:3: bad [line]"),
        DeviceError("no cuda [here]"),
        StoreError("store /x is full"),
        UserError("dataset not found: d.jsonl"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "missing.yaml"),
    ],
)
def test_user_errors_exit_2_with_the_message(err: Exception) -> None:
    code, output, exception = run_raising(_raise(err))
    assert code == 2 and isinstance(exception, SystemExit)
    # Brackets in messages are text, not rich markup.
    assert output == f"error: {err}\n"


def test_user_error_is_a_sublearn_error() -> None:
    assert issubclass(UserError, SublearnError)


@pytest.mark.parametrize(
    ("code", "strerror", "expected"),
    [
        (errno.EROFS, "Read-only file system", "/ro/out.jsonl is not writable (Read-only file"),
        (errno.EACCES, "Permission denied", "/ro/out.jsonl is not writable (Permission denied)"),
        (errno.ENOSPC, "No space left on device", "no space left on the device holding /ro/out"),
    ],
)
def test_write_failures_name_the_path(code: int, strerror: str, expected: str) -> None:
    exit_code, output, _ = run_raising(_raise(OSError(code, strerror, "/ro/out.jsonl")))
    assert exit_code == 2
    assert output.startswith(f"error: {expected}")
    assert len(output.strip().splitlines()) == 1


def test_permission_error_subclass_is_caught_too() -> None:
    code, output, _ = run_raising(_raise(PermissionError(errno.EACCES, "Permission denied", "/f")))
    assert code == 2 and output == "error: /f is not writable (Permission denied)\n"


def test_other_os_errors_are_not_hidden() -> None:
    code, _, exception = run_raising(_raise(OSError(errno.EIO, "Input/output error", "/f")))
    assert code == 1 and isinstance(exception, OSError) and exception.errno == errno.EIO


def test_corrupt_json_gets_a_clear_message() -> None:
    code, output, _ = run_raising(lambda: json.loads('{"a": 1'))
    assert code == 2
    assert output.startswith("error: a JSON file is not valid JSON (corrupt or cut short)")
    assert "line 1 column 8" in output


def test_bugs_keep_their_traceback() -> None:
    code, _, exception = run_raising(_raise(KeyError("oops")))
    assert code == 1 and isinstance(exception, KeyError)
