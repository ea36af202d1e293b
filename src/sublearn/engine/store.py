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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sublearn import __version__
from sublearn.errors import StoreError
from sublearn.runs import atomic_write_json, git_revision

DONE = "done.json"


class Store:
    """A folder of finished task outputs, keyed by ``kind/key``."""

    def __init__(self, root: Path | str) -> None:
        """Open (or create) the store at ``root``.

        Raises:
            StoreError: if the folder cannot be created or written.
        """
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
        }
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


def describe_os_error(err: OSError, where: Path | str) -> str:
    """A one-line explanation of a write failure in the store or a run folder."""
    if err.errno == errno.ENOSPC:
        return f"no space left on the device holding {where}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where} is not writable ({err.strerror})"
    return f"cannot write {where}: {err.strerror or err}"
