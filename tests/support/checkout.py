"""The checkout's root, for subprocesses that import test code (``tests`` is a package)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository root, where ``tests`` is importable from."""


def checkout_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``env`` over it and the checkout on ``PYTHONPATH``.

    Test code (``tests.support``) is not installed with sublearn: a subprocess that runs
    it (``python -m tests.support.openai_server``) finds it through this.
    """
    merged = {**os.environ, **(env or {})}
    path = merged.get("PYTHONPATH", "")
    merged["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), path) if p)
    return merged
