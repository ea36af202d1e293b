"""Options and error handling shared by every ``sublearn`` command."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from sublearn.errors import SublearnError

# Tables are wide; when output goes to a file or a CI log rather than a terminal, rich
# would fall back to 80 columns and cut them, so give it room instead.
console = Console(width=None if Console().is_terminal else 120)
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 120)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config field: key=value (dots for nesting, YAML values). Repeatable.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file; its keys override the defaults (and the preset, if any).",
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Run folder for config, results and figures."),
]


class UserError(SublearnError):
    """Bad input from the user (data, paths, arguments): reported without a traceback."""


# Write failures the user can fix (permissions, a read-only mount, a full disk). Other
# OSErrors are bugs or transient faults, and keep their traceback.
_WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors the user can fix into a one-paragraph message and exit code 2.

    Caught: every :class:`~sublearn.errors.SublearnError`, a missing file, a write that
    the filesystem refuses (the message names the path), and a JSON file that does not
    parse.
    """
    try:
        yield
    except (SublearnError, FileNotFoundError) as err:
        _fail(str(err))
    except json.JSONDecodeError as err:
        # The decoder does not know the file; readers that do use sublearn.runs.read_json.
        _fail(
            f"a JSON file is not valid JSON (corrupt or cut short): {err.msg} at line "
            f"{err.lineno} column {err.colno}; restore it or delete it and rerun"
        )
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            raise
        from sublearn.engine.store import describe_os_error

        where = err.filename if err.filename is not None else "a file"
        _fail(describe_os_error(err, where))


def _fail(message: str) -> NoReturn:
    # soft_wrap: paths in the message stay on one line, whole, for copying.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2) from None
