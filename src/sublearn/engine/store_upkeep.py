"""Whole-store upkeep: verify every finished task, and collect garbage.

``sublearn store verify`` checks each finished task against its done-marker (the per-run
check only looks at the tasks a run uses). ``sublearn store gc`` finds what no run needs:
temporary outputs of processes that died, state of tasks that finished since, entries
moved aside as corrupt, and finished entries that no run folder's manifest references.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sublearn.engine.store import DONE, Store, verify_folder
from sublearn.errors import StoreError


@dataclass(frozen=True)
class EntryCheck:
    """One folder of the store and what verification found."""

    task_id: str
    problem: str | None  # None: it verifies


def open_existing(root: Path) -> Store:
    """Open a store that must already exist (upkeep never creates one).

    Raises:
        StoreError: if ``root`` is not a folder.
    """
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise StoreError(f"the store {root} {what}: pass --store with a store folder")
    return Store(root)


def entries(store: Store) -> Iterator[tuple[str, Path]]:
    """Every ``kind/key`` folder of the store (finished or a marker-less leftover)."""
    for kind in sorted(p for p in store.root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in kind.iterdir() if p.is_dir()):
            if not folder.name.startswith("."):
                yield f"{kind.name}/{folder.name}", folder


def verify_store(store: Store, hashes: bool = True) -> list[EntryCheck]:
    """Check every entry of the store; a folder without a done-marker is a problem too."""
    checks = []
    for task_id, folder in entries(store):
        if not (folder / DONE).is_file():
            checks.append(EntryCheck(task_id, f"no {DONE} (an unfinished leftover)"))
        else:
            checks.append(EntryCheck(task_id, verify_folder(folder, hashes=hashes)))
    return checks


@dataclass(frozen=True)
class Garbage:
    """A path ``gc`` would remove, why, and its size in bytes."""

    path: Path
    reason: str
    size: int


def find_garbage(store: Store, runs: list[Path]) -> list[Garbage]:
    """What ``gc`` removes from ``store``, given the run folders under ``runs``.

    Only paths whose task nobody is working on (its lock is free) are listed, so a
    running task's temporary output or state is never touched.

    Args:
        store: the store.
        runs: folders searched (recursively) for run manifests (``manifest.json``).
    """
    referenced = referenced_entries(store, runs)
    found: list[Garbage] = []
    for kind in sorted(p for p in store.root.iterdir() if p.is_dir()):
        for path in sorted(kind.iterdir()):
            reason = _why_garbage(store, kind.name, path, referenced)
            if reason is not None:
                found.append(Garbage(path, reason, _size(path)))
    return found


def _why_garbage(store: Store, kind: str, path: Path, referenced: set[str]) -> str | None:
    name = path.name
    if not name.startswith("."):
        if not path.is_dir() or f"{kind}/{name}" in referenced:
            return None
        if not _lock_free(store, f"{kind}/{name}"):
            return None
        return "referenced by no run" if (path / DONE).is_file() else "unfinished leftover"
    key, _, suffix = name[1:].partition(".")
    if suffix.startswith("corrupt-"):
        return "moved aside as corrupt"
    if not _lock_free(store, f"{kind}/{key}"):
        return None  # a process is working on this task now
    if suffix.startswith("tmp-"):
        return f"temporary output of process {suffix[4:]}, which is gone"
    if suffix == "state" and store.is_done(f"{kind}/{key}"):
        return "state of a task that has finished"
    if suffix == "lock" and not (store.root / kind / key).exists():
        return "lock of a task not in the store"
    return None


def referenced_entries(store: Store, runs: list[Path]) -> set[str]:
    """``kind/key`` of every task that a run manifest under ``runs`` lists in this store."""
    found: set[str] = set()
    root = store.root.resolve()
    for folder in runs:
        for manifest in folder.rglob("manifest.json") if folder.is_dir() else []:
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                tasks = data["tasks"] if Path(data["store"]).resolve() == root else []
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a run manifest
            found.update(f"{t['kind']}/{t['key']}" for t in tasks if "kind" in t and "key" in t)
    return found


def remove(garbage: list[Garbage]) -> int:
    """Delete what :func:`find_garbage` listed; the bytes freed."""
    freed = 0
    for item in garbage:
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.size
    return freed


def _lock_free(store: Store, task_id: str) -> bool:
    """Whether no process holds the task's lock now (checked without waiting)."""
    kind, key = task_id.split("/")
    lock = store.root / kind / f".{key}.lock"
    if not lock.exists():
        return True
    try:
        with lock.open("a") as handle, contextlib.suppress(BlockingIOError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return True
    except OSError as err:
        raise StoreError(f"cannot open the lock {lock}: {err.strerror}") from err
    return False


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
