"""Where a command writes: checked, and made, before the command does any work.

Every command that writes a folder (a run, a model, a report) or a file (a JSONL, a
metrics JSON) calls :func:`prepare_output` before its work starts, so a path that cannot
take the output (a file where a folder is needed, a folder where a file is needed, a
read-only or full location) is one clear message before generating or training anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from sublearn.errors import StoreError

MIN_FREE_BYTES = 1 << 20
"""Less free space than this where the output goes: it is full."""


def prepare_output(
    path: Path, need: Literal["folder", "file"], what: str = "--out", create: bool = False
) -> Path:
    """Check that ``path`` can take a folder or a file, without writing anything.

    Args:
        path: where the command writes.
        need: ``"folder"`` or ``"file"``.
        what: how the user gave the path (an option name), for the message.
        create: also create the folder (or the file's folder) now.

    Returns:
        ``path``.

    Raises:
        StoreError: naming the path and what is wrong with it.
    """
    path = path.expanduser()
    if need == "folder" and path.exists() and not path.is_dir():
        raise StoreError(f"{what} {path} is a file; it must be a folder (or a new path)")
    if need == "file" and path.is_dir():
        raise StoreError(f"{what} {path} is a folder; it must be a file path")
    folder = path if need == "folder" else path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(f"{what} {path}: {existing} is a file, so no folder can be made inside it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{what} {path}: {existing} is not writable")
    if need == "file" and path.exists() and not os.access(path, os.W_OK):
        raise StoreError(f"{what} {path} exists and is not writable")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise StoreError(
            f"{what} {path}: the device holding {existing} is full ({free:,} bytes free)"
        )
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{what} {path}: cannot create {folder}: {err.strerror}") from err
    return path
