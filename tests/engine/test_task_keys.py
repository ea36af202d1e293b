"""Task keys stay where they are: every shipped config plans the keys recorded in
``data/task_keys.json`` (a changed key is a store entry nobody finds again).

A key that moves on purpose (a kind's version bumped, a science field added, a shipped
config edited) is recorded again with ``python -m tests.engine.test_task_keys`` and the
move named in the commit. ``configs/real/`` is left out: it follows the real-model runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from sublearn.config import load_config
from sublearn.engine.task import topological
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.plan import build_plan
from sublearn.presets import config_root

RECORDED = Path(__file__).parent / "data" / "task_keys.json"

CONFIGS: list[tuple[str, tuple[str, ...]]] = [
    *[
        (f"{folder}/{path.stem}", ())
        for folder in ("toy", "paper")
        for path in sorted((config_root() / folder).glob("*.yaml"))
        # Dataset teachers of local files are keyed by the file's absolute path.
        if "misalignment" not in path.stem or folder == "toy"
    ],
    ("toy/owl-numbers", ("data.holdout_rows=20",)),
    ("toy/owl-numbers", ("data.generation.constrained=true",)),
    ("toy/owl-numbers", ("data.resample=bootstrap",)),
    ("toy/owl-numbers", ("providers.openai.base_url=http://127.0.0.1:9/v1",)),
    ("toy/owl-numbers", ("students.objectives.kl.optimizer=sgd",)),
]
"""Shipped configs and variants that reach the optional fields (held-out rows,
constrained decoding, later fine-tuning fields)."""
FULL = "toy/owl-numbers"
"""The config whose every task key is recorded by name (the rest: a digest per kind)."""


def plan_keys(name: str, overrides: tuple[str, ...]) -> dict[str, str]:
    """``{task name: key}`` of every task ``name`` plans (external models by reference)."""
    cfg = load_config(ExperimentConfig, config_root() / f"{name}.yaml", list(overrides))
    plan = build_plan(cfg, fingerprint=lambda ref: ref)
    return {t.name: t.key for t in topological(plan.tasks)}


def digests(keys: dict[str, str]) -> dict[str, str]:
    """Per kind: a digest of its tasks' names and keys."""
    kinds: dict[str, list[str]] = {}
    for name, key in sorted(keys.items()):
        kinds.setdefault(name.split("/")[0], []).append(f"{name}={key}")
    return {
        kind: hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
        for kind, rows in kinds.items()
    }


def _record() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, overrides in CONFIGS:
        keys = plan_keys(name, overrides)
        entry: dict[str, object] = {"kinds": digests(keys)}
        if name == FULL and not overrides:
            entry["tasks"] = keys
        out[" ".join([name, *overrides])] = entry
    return out


@pytest.mark.parametrize(
    ("name", "overrides"), CONFIGS, ids=[" ".join([n, *o]) for n, o in CONFIGS]
)
def test_every_shipped_config_plans_the_recorded_keys(
    name: str, overrides: tuple[str, ...]
) -> None:
    recorded = json.loads(RECORDED.read_text())[" ".join([name, *overrides])]
    keys = plan_keys(name, overrides)
    if "tasks" in recorded:
        moved = {n: k for n, k in keys.items() if recorded["tasks"].get(n) != k}
        assert not moved, f"keys moved: {sorted(moved)[:5]}"
    now = digests(keys)
    moved_kinds = sorted(
        k for k in {*now, *recorded["kinds"]} if now.get(k) != recorded["kinds"].get(k)
    )
    assert not moved_kinds, f"{name}: the keys of these kinds' tasks moved: {moved_kinds}"


if __name__ == "__main__":  # record the keys again (a deliberate move)
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps(_record(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORDED}", file=sys.stderr)
