"""Defences in a (micro) experiment: planned per seed, trained, reported with their cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sublearn.config import load_config
from sublearn.engine.store import Store
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import run_experiment
from sublearn.experiments.numbers.plan import build_plan
from sublearn.runs import prepare_run_dir
from tests.experiments.numbers.conftest import DEMO, micro_overrides

DEFENCES = [
    "data.holdout_rows=3",
    "data.prompts.n_prompts=400",
    "sections=[kl_numbers]",
    "students.bases=[base0]",
    "defences={canon: {data: [{type: canonicalize}]}, "
    "masked: {data: [{type: mask_logratio, fraction: 0.5}]}, sgd: {finetune: {optimizer: sgd}}}",
]


def _cfg(store: Path, extra: list[str] | None = None) -> ExperimentConfig:
    return load_config(ExperimentConfig, DEMO, [*micro_overrides(store), *DEFENCES, *(extra or [])])


def test_plan_adds_defended_students_without_moving_undefended_keys(tmp_path: Path):
    plain = build_plan(_cfg(tmp_path, ["defences={}"]))
    defended = build_plan(_cfg(tmp_path))
    keys = {t.name: t.id for o in plain.observations for t in [o.task]}
    for obs in defended.observations:
        if obs.task.name in keys:  # the undefended students are the same tasks
            assert keys[obs.task.name] == obs.task.id
    objectives = {o.meta["objective"] for o in defended.observations}
    assert objectives == {"kl_numbers", "kl_numbers+canon", "kl_numbers+masked", "kl_numbers+sgd"}
    # Data-level defences get a defend task per seed; the SGD defence trains on the pair.
    assert sorted(defended.defends) == [
        f"defend/owl-ft/{d}/s{s}" for d in ("canon", "masked") for s in (0, 1)
    ]
    assert len(defended.losses) == 4 * 2 * 2  # objectives x seeds x conditions


def test_defence_names_and_settings_are_checked(tmp_path: Path):
    with pytest.raises(Exception, match="no '\\+' or '/'"):
        _cfg(tmp_path, ["defences={a+b: {finetune: {optimizer: sgd}}}"])
    with pytest.raises(Exception, match="does not fit objective"):
        _cfg(tmp_path, ["defences={x: {finetune: {optimiser: sgd}}}"])


def test_defences_run_and_report(tmp_path: Path):
    cfg = _cfg(tmp_path / "store")
    out = prepare_run_dir(tmp_path / "run", cfg, "test")
    summary = run_experiment(cfg, out, Console(record=True, width=200), show_progress=False)
    rows = {r["defence"]: r for r in summary["defences"]}
    assert set(rows) == {"none", "canon", "masked", "sgd"}
    assert rows["masked"]["cleaning"]["characters_masked"] > 0
    assert rows["canon"]["cleaning"]["rows_out"] == rows["canon"]["cleaning"]["rows_in"]
    for name in ("canon", "masked", "sgd"):
        assert "loss_delta" in rows[name]  # held-out loss, paired by seed
    assert "## Defences" in (out / "report.md").read_text()
    # The masked students' data carries the masks the trainer honours.
    plan = build_plan(cfg)
    folder = Store(cfg.store).path(plan.defends["defend/owl-ft/masked/s0"].id)
    records = [json.loads(line) for line in (folder / "treatment.jsonl").read_text().splitlines()]
    assert any(r.get("loss_mask") for r in records)
    artifacts = json.loads((out / "artifacts.json").read_text())
    assert Path(artifacts["teachers"]["owl-ft"]["data"]).is_file()
