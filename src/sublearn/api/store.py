"""Browse a task store from Python: its tasks, their data as ``datasets``, their models.

::

    store = sublearn.open_store(".cache/store")
    pairs = store.tasks(kind="pair")
    rows = pairs[0].dataset("treatment")     # a datasets.Dataset
    student = store.tasks(kind="train")[0].model(device="cpu")  # a backend
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sublearn.errors import DataError

DONE = "done.json"


@dataclass(frozen=True)
class TaskInfo:
    """One finished task in a store.

    Attributes:
        id: ``kind/key``, its folder in the store.
        kind: the task kind.
        name: its readable name (as plans and manifests print it).
        path: its output folder.
        params: the settings that determine it (what its key hashes).
        result: what the task returned (metrics, counts, warnings).
        finished_at: ISO time it finished.
        seconds: how long it ran.
    """

    id: str
    kind: str
    name: str
    path: Path
    params: dict[str, Any] = field(repr=False)
    result: dict[str, Any] = field(repr=False)
    finished_at: str | None = None
    seconds: float | None = None

    @property
    def files(self) -> list[str]:
        """The task's output files, relative to its folder (models' weights included)."""
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() and p.name != DONE
        )

    def datasets(self) -> list[str]:
        """Names of the task's JSONL files (without ``.jsonl``), for :meth:`dataset`."""
        return [f.removesuffix(".jsonl") for f in self.files if f.endswith(".jsonl")]

    def dataset(self, name: str | None = None) -> Any:
        """One of the task's JSONL files as a Hugging Face ``datasets.Dataset``.

        Args:
            name: the file without ``.jsonl`` (``data``, ``accepted``, ``treatment``, ...);
                default: the task's only JSONL file, or its main one.

        Raises:
            DataError: the task has no such file (the message lists those it has).
        """
        from datasets import Dataset

        from sublearn.jsonl import read_jsonl

        names = self.datasets()
        if name is None:
            main = [n for n in ("data", "accepted", "treatment") if n in names]
            if len(names) != 1 and not main:
                raise DataError(f"{self.name}: name one of its datasets: {', '.join(names)}")
            name = names[0] if len(names) == 1 else main[0]
        path = self.path / f"{name}.jsonl"
        if not path.is_file():
            raise DataError(
                f"{self.name} has no {name}.jsonl (it has: {', '.join(names) or 'none'})"
            )
        return Dataset.from_list([obj for _, _, obj in read_jsonl(path)])

    def model_path(self) -> Path:
        """The folder of the model this task trained or built.

        Raises:
            DataError: the task holds no model (a generation, a filter, ...).
        """
        for sub in ("model", "."):
            if (self.path / sub / "config.json").is_file() or (
                self.path / sub / "adapter_config.json"
            ).is_file():
                return (self.path / sub).resolve()
        raise DataError(f"{self.name} holds no model (files: {', '.join(self.files[:8])})")

    def model(self, **options: Any) -> Any:
        """Open the task's model as a backend (``generate``, ``token_logprobs``, ...).

        Args:
            **options: backend options, e.g. ``device="cpu"``, ``batch_size=16``.

        Returns:
            The backend; call ``close()`` (or use it in a ``with`` block) when done.
        """
        from sublearn.backends.registry import open_backend

        return open_backend(str(self.model_path()), **options)


class StoreBrowser:
    """A read-only view of a task store (``store:`` of an experiment config).

    Args:
        root: the store folder.

    Raises:
        DataError: the folder does not exist.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such store folder")

    def tasks(self, kind: str | None = None, name: str | None = None) -> list[TaskInfo]:
        """Finished tasks, oldest first.

        Args:
            kind: only this kind (``teacher``, ``generate``, ``filter``, ``pair``,
                ``train``, ``evaluate``, ...).
            name: only tasks whose name contains this text.
        """
        pattern = f"{kind}/*/{DONE}" if kind else f"*/*/{DONE}"
        out = []
        for marker in self.root.glob(pattern):
            try:
                done = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue  # a damaged entry; `sublearn store verify` reports those
            info = TaskInfo(
                id=f"{marker.parent.parent.name}/{marker.parent.name}",
                kind=done.get("kind", marker.parent.parent.name),
                name=done.get("name", marker.parent.name),
                path=marker.parent,
                params=done.get("params", {}),
                result=done.get("result", {}) or {},
                finished_at=done.get("finished_at"),
                seconds=done.get("seconds"),
            )
            if name is None or name in info.name:
                out.append(info)
        return sorted(out, key=lambda t: (t.finished_at or "", t.name))

    def task(self, name_or_id: str) -> TaskInfo:
        """The task with this exact name (``pair/owl-ft/s0``) or id (``pair/5be4...``).

        Raises:
            DataError: no such task, or several with that name (the ids are listed).
        """
        matches = [t for t in self.tasks() if name_or_id in (t.name, t.id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise DataError(f"no task {name_or_id!r} in the store {self.root}")
        ids = ", ".join(t.id for t in matches)
        raise DataError(f"{len(matches)} tasks are named {name_or_id!r}; pick one id: {ids}")


def open_store(root: str | Path) -> StoreBrowser:
    """Open a task store for browsing (see :class:`StoreBrowser`)."""
    return StoreBrowser(root)
