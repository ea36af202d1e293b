"""The numbers experiment through the engine, on a small toy world: the effect is there
where it must be, the output contract holds, and a rerun does nothing.

The small run is the demo with half its prompts, 800 rows per student and 3 seeds (on a
world with half the pretraining, the matched control teacher forgot how to write numbers:
45 valid lists of 1,500). The slow test runs the demo itself and checks what the README
claims.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sublearn.config import load_config
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import run_experiment
from sublearn.runs import prepare_run_dir
from tests.experiments.numbers.conftest import DEMO

ROW_KEYS = {
    "trait",
    "teacher_kind",
    "objective",
    "teacher_base",
    "student_base",
    "same_base",
    "evaluation",
    "rows",
    "treatment",
    "control",
    "treatment_minus_control",
}


def _run(root: Path, overrides: list[str]) -> tuple[Path, dict]:
    cfg = load_config(ExperimentConfig, DEMO, overrides)
    out = prepare_run_dir(root / "run", cfg, "test")
    console = Console(record=True, width=200)
    summary = run_experiment(cfg, out, console, show_progress=False)
    return out, summary


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    root = tmp_path_factory.mktemp("e2e")
    overrides = [
        f"store={root / 'store'}",
        "sections=[owl-ft/kl_numbers, owl-ft/icl-4]",
        "students.seeds=[0, 1, 2]",
        "data.prompts.n_prompts=1500",
        "data.rows=800",
    ]
    out, summary = _run(root, overrides)
    return out, summary, overrides


def test_same_base_students_learn_the_trait_and_cross_model_students_do_not(
    small_run: tuple[Path, dict, list[str]],
) -> None:
    _, summary, _ = small_run
    primary = summary["effects"][summary["primary"]]
    assert (primary["objective"], primary["student_base"], primary["same_base"]) == (
        "kl_numbers",
        "base0",
        True,
    )
    effect = primary["treatment_minus_control"]
    assert effect["mean"] > 2.0 and effect["ci95"][0] > 0  # percentage points
    (contrast,) = [c for c in summary["same_minus_cross"] if c["objective"] == "kl_numbers"]
    assert contrast["mean"] > 2.0 and contrast["ci95"][0] > 0


def test_summary_follows_the_output_contract(small_run: tuple[Path, dict, list[str]]) -> None:
    out, summary, _ = small_run
    assert json.loads((out / "summary.json").read_text())["effects"] == summary["effects"]
    assert len(summary["effects"]) == 4  # {kl, icl-4} x {base0, base1}
    for row in summary["effects"]:
        assert set(row) >= ROW_KEYS
        assert row["rows"] == 800  # both conditions, every seed
        for key in ("treatment", "control", "treatment_minus_control"):
            assert {"mean", "ci95", "n"} <= set(row[key])
        assert "p_value" in row["treatment_minus_control"]
    csv_lines = (out / "effects.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(summary["effects"])
    for name in ["config.yaml", "meta.json", "manifest.json", "report.md", "effects.png"]:
        assert (out / name).is_file(), name
    assert "| 800 |" in (out / "report.md").read_text()
    # Where its world was built, and which weights it holds (builds differ across CPU types).
    (world,) = summary["worlds"]
    assert [b["name"] for b in world["bases"]] == ["base-0", "base-1"]
    assert all(len(b["sha256"]) == 64 for b in world["bases"])
    assert world["numerics"]["cpu_capability"] and world["key"].startswith("world/")
    assert "## Toy worlds" in (out / "report.md").read_text()


def test_rerun_finds_every_task_in_the_store(
    small_run: tuple[Path, dict, list[str]], tmp_path: Path
) -> None:
    out, summary, overrides = small_run
    store = next(o.split("=", 1)[1] for o in overrides if o.startswith("store="))
    again_out, again = _run(tmp_path, [f"store={store}", *overrides[1:]])
    assert again["effects"] == summary["effects"]
    manifest = json.loads((again_out / "manifest.json").read_text())
    assert manifest["tasks"] and all(t["cached"] for t in manifest["tasks"])
    # The resumed run reports what the tasks cost when they ran, not the time to find them.
    first = json.loads((out / "manifest.json").read_text())
    # Per task: manifests list tasks in completion order, and a float sum depends on it.
    seconds = {t["key"]: t["seconds"] for t in manifest["tasks"]}
    assert seconds == {t["key"]: t["seconds"] for t in first["tasks"]}


@pytest.mark.slow
def test_demo_claims(tmp_path: Path) -> None:
    """What the README claims of ``sublearn demo``, from an empty store."""
    _, summary = _run(tmp_path, [f"store={tmp_path / 'store'}"])
    effects = summary["effects"]
    primary = effects[summary["primary"]]["treatment_minus_control"]
    assert primary["mean"] >= 5.0 and primary["ci95"][0] > 0
    contrast = next(c for c in summary["same_minus_cross"] if c["objective"] == "kl_numbers")
    assert contrast["ci95"][0] > 0
    for row in effects:
        if row["objective"].startswith("icl"):
            lo, hi = row["treatment_minus_control"]["ci95"]
            assert lo <= 0 <= hi, row
    _audit_claims(tmp_path / "run", tmp_path / "audit")


def _audit_claims(run: Path, root: Path) -> None:
    """What the README claims of ``sublearn audit`` on the demo's data.

    The audited rows and the reference control rows answer disjoint prompts (even and odd
    prompt ids), so the null comparison (control against control) is exchangeable.
    """
    from sublearn.audit.config import AuditConfig
    from sublearn.audit.run import run_audit

    art = json.loads((run / "artifacts.json").read_text())["teachers"]["owl-ft"]

    def part(path: str, parity: int, name: str) -> str:
        lines = Path(path).read_text().splitlines()
        kept = [line for line in lines if int(json.loads(line)["id"]) % 2 == parity]
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(kept) + "\n")
        return str(root / name)

    reference = part(art["control"], 1, "control-odd.jsonl")
    models = {
        "base": art["base"]["model"],
        "teachers": [art["teacher"]["model"], art["control_teacher"]["model"]],
        "trait": art["trait"],
    }
    flagged = {}
    for name, data in (
        ("owl", part(art["data"], 0, "owl-even.jsonl")),
        ("null", part(art["control"], 0, "control-even.jsonl")),
    ):
        cfg = AuditConfig(data=data, control=reference, out=str(root / name), **models)
        flagged[name] = [v.detector for v in run_audit(cfg, Console(width=200)) if v.flagged]
    assert len(flagged["owl"]) >= 3, flagged
    assert flagged["null"] == [], flagged
