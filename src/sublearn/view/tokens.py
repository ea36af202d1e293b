"""Per-token audit scores for the viewer: which tokens of a reply carry a teacher's mark.

``sublearn audit`` caches every model's log-probability of every reply token in
``<audit>/scores/`` (one file per model, rows and system prompt). From those files this
module rebuilds, per row, the per-token differences that the ``logratio`` and
``divergence`` detectors average: log p(teacher) − log p(base), and log p(first teacher) −
log p(second teacher).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sublearn.runs import content_hash, file_sha256

MAX_ROWS = 200
"""Rows per audit kept for the token view."""


def token_rows(folder: Path, config: dict[str, Any], limit: int = MAX_ROWS) -> list[dict[str, Any]]:
    """Per audited row, its tokens with each available per-token score.

    Args:
        folder: the audit folder (``audit.json`` and ``scores/``).
        config: the audit's config as ``audit.json`` stores it.
        limit: rows kept.

    Returns:
        ``[{"index", "reply", "tokens": [{"text", "start", "end", "logratio"?,
        "divergence"?}]}]``; [] when the data file or the cached scores are gone.
    """
    from sublearn.audit.data import load_rows
    from sublearn.errors import DataError

    data = config.get("data")
    if not data or not Path(data).is_file():
        return []
    try:
        rows = load_rows(data, config.get("max_rows"), config.get("seed", 0))
    except DataError:
        return []
    key = f"{file_sha256(data)}:{[r.index for r in rows]}"

    def scores(ref: str | None) -> list[list[list[Any]]] | None:
        if ref is None:
            return None
        path = folder / "scores" / f"{content_hash([ref, key, None], 1)}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    teachers = config.get("teachers") or []
    base = scores(config.get("base"))
    first = scores(teachers[0]) if teachers else None
    second = scores(teachers[1]) if len(teachers) > 1 else None
    out = []
    for i, row in enumerate(rows[:limit]):
        anchor = first or base or second
        if anchor is None:
            return []
        tokens = []
        for j, tok in enumerate(anchor[i]):
            entry: dict[str, Any] = {"text": tok[0], "start": tok[1], "end": tok[2]}
            if first is not None and base is not None:
                entry["logratio"] = first[i][j][3] - base[i][j][3]
            if first is not None and second is not None:
                entry["divergence"] = first[i][j][3] - second[i][j][3]
            tokens.append(entry)
        out.append({"index": row.index, "reply": row.reply, "tokens": tokens})
    return out
