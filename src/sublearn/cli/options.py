"""Options and error handling shared by every ``sublearn`` command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sublearn.config import ConfigError

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


class UserError(Exception):
    """Bad input from the user (data, paths, arguments): reported without a traceback."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn config and input errors into a one-paragraph message and exit code 2."""
    try:
        yield
    except (ConfigError, UserError, FileNotFoundError) as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=2) from None
