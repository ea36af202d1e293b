"""Command configs as engine task params: input files by content, speed settings out.

``sublearn mnist``, ``theory``, ``audit`` and ``defend`` run as engine tasks. Each task's
params are its command's config in *keyed form*: every input file a path names is
replaced by the SHA-256 of its content (``sha256:<hex>``), every model reference is
paired with its fingerprint, output locations are reset to their defaults, and settings
that only change speed (threads, device, batch sizes), declared so on their fields
(:mod:`sublearn.keys`), are left out. The full config, paths and speed settings included,
travels in the task's ``runtime``, which is not hashed; the task recomputes the keyed
form from it and refuses to run when it differs (a file edited since the task was
planned), so a store entry always holds what its key says.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from sublearn.config import Config
from sublearn.errors import DataError
from sublearn.runs import file_sha256

C = TypeVar("C", bound=Config)


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes.

    Raises:
        DataError: the file does not exist or is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return f"sha256:{file_sha256(path)}"


def at_defaults(cfg: C, fields: Iterable[str]) -> C:
    """A copy of ``cfg`` with ``fields`` at their defaults (locations out of a key)."""
    model = type(cfg).model_fields
    update = {name: model[name].get_default(call_default_factory=True) for name in fields}
    return cfg.model_copy(update=update)


def require_unchanged(planned: dict[str, Any], now: dict[str, Any], what: str) -> None:
    """Refuse to run a task whose inputs changed between planning and running.

    Args:
        planned: the task's params (the keyed form when it was planned).
        now: the keyed form recomputed where the task runs.
        what: the task, for the message.

    Raises:
        DataError: naming the settings whose content differs.
    """
    if planned == now:
        return
    changed = sorted(k for k in {*planned, *now} if planned.get(k) != now.get(k))
    raise DataError(
        f"{what}: its inputs changed since it was planned ({', '.join(changed)} differ: an "
        "input file edited or a model rebuilt meanwhile); rerun the command"
    )
