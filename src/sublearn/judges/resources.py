"""Built-in judge files (rubrics, rulesets) by name, or a user's file by path.

Rubrics and rulesets are YAML files shipped in a folder of this package; a config names
one of them, or gives the path of its own file. This is the one loader both use.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

from sublearn.errors import ConfigError

T = TypeVar("T")

Parse = Callable[[str, str, str], T]
"""``(name, text, where) -> object``; ``where`` names the source in error messages."""


def known_names(folder: str) -> tuple[str, ...]:
    """Names of the built-in YAML files in ``sublearn/judges/<folder>``, sorted."""
    files = resources.files("sublearn.judges").joinpath(folder)
    return tuple(
        sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))
    )


def load_named(name: str | Path, folder: str, what: str, parse: Parse[T]) -> T:
    """A built-in file by name, or a file by path, parsed.

    Args:
        name: a built-in name, or a path (a ``Path``, anything ending in
            ``.yaml``/``.yml``, or naming an existing file).
        folder: the built-in files' folder in ``sublearn/judges`` (``rubrics``).
        what: what the files are, for messages (``rubric``).
        parse: builds the object from the file's name (its stem), text and source.

    Raises:
        ConfigError: an unknown name (the message lists the known ones and the closest
            match) or a missing file; ``parse`` raises for a malformed one.
    """
    text = str(name)
    path = Path(text).expanduser()
    if isinstance(name, Path) or text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{what} file {path} does not exist")
        return parse(path.stem, path.read_text(encoding="utf-8"), str(path))
    return _builtin(text, folder, what, parse)


@cache
def _builtin(name: str, folder: str, what: str, parse: Parse[T]) -> T:
    known = known_names(folder)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown {what} {name!r}{hint} Known {what}s: {', '.join(known)} "
            f"(or pass the path of a {what} YAML file)"
        )
    source = resources.files("sublearn.judges").joinpath(folder, f"{name}.yaml")
    return parse(name, source.read_text(encoding="utf-8"), f"built-in {what} {name!r}")
