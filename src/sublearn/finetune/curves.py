"""Training curves: loss and learning rate per optimizer step, in ``curves.jsonl``.

Every trainer (hard-label SFT, KL distillation alone or batched, the MNIST trainers)
appends one JSON line per step to a ``curves.jsonl`` beside what it trains, so a user can
plot how training went without re-running it. The same curves can be copied into
TensorBoard event files (:func:`write_tensorboard`) for users who already run TensorBoard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sublearn.jsonl import AppendLog

CURVES_FILE = "curves.jsonl"


class CurveLog:
    """Appends ``{"step", "loss", "lr", ...}`` lines to a ``curves.jsonl`` as training goes.

    A non-durable :class:`~sublearn.jsonl.AppendLog`: each line reaches the OS as it is
    written, so a long run's file can be followed live, without a disk sync per step.

    Args:
        path: the file to write (emptied first: a retried training starts over).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = AppendLog(path, durable=False)
        self._log.truncate()
        self._closed = False

    def log(self, step: int, loss: float, lr: float, **extra: Any) -> None:
        """Record one optimizer step (1-based) with the learning rate it used.

        Raises:
            ValueError: the log was closed.
        """
        if self._closed:
            raise ValueError(f"{self.path}: the curve log is closed")
        self._log.append({"step": step, "loss": _finite(loss), "lr": _finite(lr), **extra})

    def close(self) -> None:
        """Close the log (further ``log`` calls fail)."""
        self._closed = True


def write_curves(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write a whole curve at once (trainers that know every step only at the end)."""
    from sublearn.runs import atomic_write_text

    lines = [
        json.dumps({**row, "loss": _finite(row["loss"]), "lr": _finite(row["lr"])}) + "\n"
        for row in rows
    ]
    atomic_write_text(path, "".join(lines))


def read_curves(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``curves.jsonl``; [] when there is none (older tasks, API fine-tunes).

    A line cut short by a kill is skipped; the steps before it are still good.
    """
    return list(AppendLog(path).read())


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package (which writes event files) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def write_tensorboard(curves: list[dict[str, Any]], folder: Path, tag: str = "train") -> Path:
    """Copy a curve into TensorBoard event files under ``folder`` (``tensorboard --logdir``).

    Args:
        curves: rows as :func:`read_curves` returns them.
        folder: the event files' folder (created).
        tag: prefix of the scalars' names (``<tag>/loss``, ``<tag>/lr``).

    Returns:
        ``folder``.

    Raises:
        ConfigError: when the ``tensorboard`` package is not installed.
    """
    from sublearn.errors import ConfigError

    if not tensorboard_available():
        raise ConfigError(
            "tensorboard: true needs the tensorboard package: pip install tensorboard"
        )
    from torch.utils.tensorboard.writer import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for row in curves:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    writer.add_scalar(f"{tag}/{key}", value, global_step=int(row["step"]))
    finally:
        writer.close()
    return folder


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
