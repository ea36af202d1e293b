"""The content-addressed artifact store shared by every run.

Layout, for a task of kind ``k`` and key ``h`` under the store root::

    k/h/            the finished output (JSONL, JSON, Hugging Face model folders)
    k/h/done.json   the done-marker, written last: settings, inputs, version, timings
    k/.h.lock       a file lock held while a process works on the task
    k/.h.state/     state that survives a kill (finished chunks, saved job ids)
    k/.h.tmp-PID/   the output being written; renamed to ``k/h`` when complete

A folder ``k/h`` is complete if and only if ``k/h/done.json`` exists: the marker is
written inside the temporary folder before the rename, and the rename is atomic. The
lock is an ``flock`` on a file, which the kernel releases when its holder dies, so a
killed run never leaves a task locked.

The marker lists the size and SHA-256 of every file the task wrote, and a hash of its
own content. Reading a finished task checks them (:meth:`Store.problem`): sizes always,
hashes with ``verify="hashes"``. A task that fails the check is corrupt: it is moved
aside to ``k/.h.corrupt-TIME`` and counts as not done, so the run recomputes it under
the same key (its dependants keep their keys and are reused if they verify).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from sublearn.config import Config
from sublearn.errors import StoreError
from sublearn.runs import atomic_write_json, file_sha256, git_revision
from sublearn.version import __version__

DONE = "done.json"

Verify = Literal["none", "sizes", "hashes"]
"""How much of a finished task is checked before it is used: nothing, the sizes of its
files (a stat each), or their SHA-256 too (reads every byte)."""


class StoreConfig(Config):
    """Where the store is and how much of a finished task is checked before it is used.

    A plain string is short for ``{path: STRING}``. The config stands for its path
    wherever a path is expected (``os.fspath``, ``str``).
    """

    path: str = Field(
        default=".cache/store",
        description="Content-addressed store shared by runs: identical tasks are done once.",
    )
    verify: Verify = Field(
        default="sizes",
        description="Check of a finished task before use: sizes (a stat per file), hashes "
        "(SHA-256 of every byte: catches edits that keep the size) or none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"path": str(data)} if isinstance(data, str | os.PathLike) else data

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path


class CorruptEntryWarning(UserWarning):
    """A finished task in the store failed verification and is recomputed."""


class Store:
    """A folder of finished task outputs, keyed by ``kind/key``."""

    def __init__(self, root: os.PathLike[str] | str, verify: Verify | None = None) -> None:
        """Open (or create) the store at ``root``.

        Args:
            root: the store folder, or a store config (``path`` and ``verify``).
            verify: how finished tasks are checked before use; None: the config's
                setting, else ``"sizes"``.

        Raises:
            StoreError: if the folder cannot be created or written.
        """
        self.verify: Verify = verify or getattr(root, "verify", None) or "sizes"
        self.repaired: list[str] = []  # one line per corrupt entry moved aside
        self._checked: dict[str, str | None] = {}
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the store folder {self.root}: {err.strerror}") from err
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"the store folder {self.root} is not writable")

    def path(self, task_id: str) -> Path:
        """Where the finished output of ``kind/key`` lives."""
        return self.root / task_id

    def is_done(self, task_id: str) -> bool:
        """Whether ``kind/key`` finished (its done-marker exists)."""
        return (self.path(task_id) / DONE).is_file()

    def marker(self, task_id: str) -> dict[str, Any]:
        """The done-marker of a finished task."""
        return json.loads((self.path(task_id) / DONE).read_text())

    def problem(self, task_id: str, verify: Verify | None = None) -> str | None:
        """What is wrong with a finished task's files; None when they verify.

        Checked once per task and store object (a run asks for each task more than once).

        Args:
            task_id: ``kind/key`` of a finished task.
            verify: override the store's level.
        """
        level = verify or self.verify
        if level == "none":
            return None
        if task_id not in self._checked or verify is not None:
            found = verify_folder(self.path(task_id), hashes=level == "hashes")
            if verify is not None:
                return found
            self._checked[task_id] = found
        return self._checked[task_id]

    def usable(self, task_id: str, console: Any = None) -> bool:
        """Whether ``kind/key`` is done and verifies; a corrupt entry is moved aside.

        A corrupt entry is reported in one line (on ``console`` if given, and as a
        :class:`CorruptEntryWarning`) and recorded in :attr:`repaired`; the caller then
        recomputes it like a task never run.
        """
        if not self.is_done(task_id):
            return False
        problem = self.problem(task_id)
        if problem is None:
            return True
        with self.lock(task_id):  # another run may be moving or replacing it
            self._checked.pop(task_id, None)
            if not self.is_done(task_id):
                return False
            problem = self.problem(task_id)
            if problem is None:  # already recomputed by another process
                return True
            kind, key = task_id.split("/")
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            aside = self.root / kind / f".{key}.corrupt-{stamp}-{os.getpid()}"
            os.replace(self.path(task_id), aside)
            self._checked.pop(task_id, None)
        line = (
            f"corrupt store entry {task_id} ({problem}): moved aside to {aside.name}, "
            "recomputing it"
        )
        self.repaired.append(line)
        if console is not None:
            console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
        warnings.warn(line, CorruptEntryWarning, stacklevel=2)
        return False

    def state_dir(self, task_id: str) -> Path:
        """The task's interruption-proof scratch folder."""
        kind, key = task_id.split("/")
        return self.root / kind / f".{key}.state"

    @contextlib.contextmanager
    def lock(self, task_id: str) -> Iterator[None]:
        """Hold the task's lock (blocking): one process works on a task at a time."""
        kind, key = task_id.split("/")
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f".{key}.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def new_output(self, task_id: str) -> Path:
        """A fresh, empty temporary folder for a task's output."""
        kind, key = task_id.split("/")
        tmp = self.root / kind / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, task_id: str, tmp: Path, marker: dict[str, Any], started: float) -> Path:
        """Write the done-marker into ``tmp`` and move it into place.

        Args:
            task_id: ``kind/key``.
            tmp: the folder the task wrote.
            marker: what to record (name, params, inputs, runtime, result).
            started: ``time.time()`` when the task started, for its timing.

        Returns:
            The finished folder.
        """
        final = self.path(task_id)
        record = {
            **marker,
            "id": task_id,
            "sublearn_version": __version__,
            "git_revision": git_revision(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            "files": file_manifest(tmp),
        }
        record["marker_sha256"] = _marker_hash(record)
        atomic_write_json(tmp / DONE, record)
        if final.exists():  # an incomplete leftover (no marker) from an older layout
            shutil.rmtree(final)
        os.replace(tmp, final)
        shutil.rmtree(self.state_dir(task_id), ignore_errors=True)
        return final

    def clean_stale(self, task_id: str) -> None:
        """Remove temporary outputs of ``task_id`` left by killed processes."""
        kind, key = task_id.split("/")
        for tmp in (self.root / kind).glob(f".{key}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` but the marker."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != DONE:
            files[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return files


def verify_folder(folder: Path, hashes: bool = False) -> str | None:
    """Check a finished task folder against its done-marker; None when it holds.

    Args:
        folder: ``k/h``.
        hashes: also compare SHA-256 (reads every byte); else sizes only.

    Returns:
        A short description of the first problem found (a missing or cut file, an
        edited done-marker), or None.
    """
    try:
        record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{DONE} is unreadable or not valid JSON"
    if not isinstance(record, dict):
        return f"{DONE} is not a JSON object"
    files = record.get("files")
    if files is None:  # written before markers listed their files: nothing to check
        return None
    if not isinstance(files, dict) or record.get("marker_sha256") != _marker_hash(record):
        return f"{DONE} was edited (its own hash does not match)"
    for rel, expected in files.items():
        path = folder / rel
        try:
            size = path.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != expected.get("size"):
            return f"{rel} has {size:,} bytes, {expected.get('size'):,} were written"
        if hashes and file_sha256(path) != expected.get("sha256"):
            return f"{rel} has changed (SHA-256 differs from when it was written)"
    return None


def _marker_hash(record: dict[str, Any]) -> str:
    """Hash of a marker's content without its own hash field (NaN-safe, key-order-free)."""
    body = {k: v for k, v in record.items() if k != "marker_sha256"}
    # Hash what is on disk: the JSON writer replaces NaN with null.
    canonical = json.dumps(json.loads(json.dumps(_json_ready(body))), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    return obj


def describe_os_error(err: OSError, where: Path | str) -> str:
    """A one-line explanation of a write failure in the store or a run folder."""
    if err.errno == errno.ENOSPC:
        return f"no space left on the device holding {where}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where} is not writable ({err.strerror})"
    return f"cannot write {where}: {err.strerror or err}"
