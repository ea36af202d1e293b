"""Pairing: the rows a seed's treatment and control students train on, drawn by prompt.

The pool is the prompts both the teacher and its matched control answered validly, so the
two conditions always train on the same prompts and the same number of rows. A seed draws
from the pool with replacement (``bootstrap``), without (``subsample``), or reuses seed 0's
draw (``fixed``, decided when planning).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sublearn.engine.params import PairParams
from sublearn.errors import NotEnoughRowsError


def read_by_id(path: Path) -> dict[str, str]:
    """A JSONL file's lines by their row's ``id``."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rows[json.loads(line)["id"]] = line
    return rows


def pair_rows(treatment_path: Path, control_path: Path, out: Path, p: PairParams) -> dict[str, Any]:
    """Write ``treatment.jsonl`` and ``control.jsonl`` (and ``heldout.jsonl``) into ``out``.

    Args:
        treatment_path: the trait teacher's accepted rows.
        control_path: the matched control's accepted rows.
        out: the output folder.
        p: the pair task's params.

    Returns:
        Rows drawn, unique rows, pool size, each condition's accepted rows, held-out rows,
        and warnings.

    Raises:
        NotEnoughRowsError: fewer valid pairs than ``p.min_rows``.
    """
    treatment = read_by_id(treatment_path)
    control = read_by_id(control_path)
    pool = sorted(set(treatment) & set(control))
    heldout: list[str] = []
    if p.holdout:
        # A fixed slice of prompts no seed trains on; a student's loss on the control's
        # replies to them measures what a defence costs in plain language modelling.
        heldout, pool = pool[-p.holdout :], pool[: -p.holdout]
        (out / "heldout.jsonl").write_text("".join(control[i] + "\n" for i in heldout))
    if len(pool) < p.min_rows:
        raise NotEnoughRowsError(
            f"teacher {p.teacher}: only {len(pool)} prompts have valid replies from both the "
            f"teacher ({len(treatment)} accepted) and its matched control ({len(control)} "
            f"accepted); data.min_rows is {p.min_rows}. Ask for more prompts "
            "(data.prompts.n_prompts) or check the filter report."
        )
    warnings = []
    rows = len(pool) if p.rows is None else min(p.rows, len(pool))
    if p.rows is not None and p.rows > len(pool):
        warnings.append(
            f"teacher {p.teacher}: {p.rows} rows asked, only {len(pool)} prompts valid "
            f"for both teacher and control; students train on {rows}"
        )
    rng = random.Random(p.seed)
    ids = rng.choices(pool, k=rows) if p.resample == "bootstrap" else rng.sample(pool, rows)
    for name, source in (("treatment", treatment), ("control", control)):
        (out / f"{name}.jsonl").write_text("".join(source[i] + "\n" for i in ids))
    return {
        "rows": rows,
        "unique_rows": len(set(ids)),
        "pool": len(pool),
        "accepted_treatment": len(treatment),
        "accepted_control": len(control),
        **({"heldout": len(heldout)} if heldout else {}),
        "warnings": warnings,
    }
