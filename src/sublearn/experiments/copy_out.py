"""Copying a finished task's files from the store to where a command's user asked.

A file already there with the same bytes is left alone, so copying the same entry twice
changes nothing (not even modification times); a copied file keeps its store times.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from sublearn.engine.store import DONE


def copy_entry(entry: Path, dest: Path, skip: tuple[str, ...] = (DONE,)) -> None:
    """Copy every file of a store entry into the folder ``dest`` (but the done-marker)."""
    for source in sorted(entry.rglob("*")):
        relative = source.relative_to(entry)
        if source.is_dir() or relative.as_posix() in skip:
            continue
        copy_file(source, dest / relative)


def copy_file(source: Path, target: Path) -> None:
    """Copy one file (content and times) unless ``target`` already holds the same bytes.

    The copy is written beside the target and renamed over it, so a reader sees the old
    file or the new one, never half.
    """
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source, partial)
    partial.replace(target)
