"""Run folders: where every command writes its config, provenance, results and figures.

Files are written atomically (write to a temporary file, then rename), so an
interrupted run never leaves a half-written artifact that a rerun would trust.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sublearn.config import Config
from sublearn.errors import DataError
from sublearn.runtime import numerics
from sublearn.version import __version__


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def _json_safe(obj: Any) -> Any:
    """Replace NaN and infinities, which JSON cannot hold, with null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN becomes null)."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, with errors that name it.

    Raises:
        DataError: if the file is missing, unreadable, or not valid JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
            "the file is corrupt or was cut short: restore it or delete it and rerun"
        ) from None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks (model weights can be large).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(*parts: Any, length: int = 12) -> str:
    """A short stable hash of JSON-serializable parts (configs, upstream hashes)."""
    canonical = json.dumps(
        [p.model_dump(mode="json") if isinstance(p, Config) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def git_revision(cwd: Path | None = None) -> str | None:
    """The git commit of the source tree (with ``-dirty`` if modified), or None outside git."""
    where = cwd or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def prepare_run_dir(out: Path, config: Config, command: str) -> Path:
    """Create the run folder and record what produced it.

    Writes ``config.yaml`` (the resolved config) and ``meta.json`` (package version, git
    revision, command, time, platform).

    Args:
        out: the run folder; created if missing.
        config: the resolved config.
        command: the command line or stage name that owns the folder.

    Returns:
        ``out``, for chaining.
    """
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", config.to_yaml())
    import torch  # deferred: importing torch costs a second, the rest of this module does not

    meta = {
        "command": command,
        "sublearn_version": __version__,
        "git_revision": git_revision(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "numerics": numerics(),
        "config_hash": content_hash(config),
    }
    atomic_write_json(out / "meta.json", meta)
    return out
