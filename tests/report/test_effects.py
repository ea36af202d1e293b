"""The effects table against hand-computed paired t statistics, and its output contract."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as st

from sublearn.report.effects import CSV_COLUMNS, effects_csv, effects_table
from tests.report.synthetic import experiment, observation, references

PRIMARY = {"teacher": "owl-ft", "objective": "sft"}

# One row with hand-picked rates: treatment - control per seed = 9, 12, 10 pp.
TREAT = {0: 0.15, 1: 0.20, 2: 0.16}
CTRL = {0: 0.06, 1: 0.08, 2: 0.06}


def _known() -> list[dict[str, Any]]:
    obs = [observation("owl-ft", "sft", "base0", "treatment", s, r) for s, r in TREAT.items()]
    obs += [observation("owl-ft", "sft", "base0", "control", s, r) for s, r in CTRL.items()]
    return obs


def _row(summary: dict[str, Any], **want: Any) -> dict[str, Any]:
    rows = [r for r in summary["effects"] if all(r[k] == v for k, v in want.items())]
    assert len(rows) == 1, want
    return rows[0]


def test_row_equals_hand_computed_paired_t() -> None:
    summary = effects_table(_known(), references(), PRIMARY)
    (row,) = summary["effects"]
    t, c = np.array(list(TREAT.values())) * 100, np.array(list(CTRL.values())) * 100
    d = t - c  # 9, 12, 10
    q = st.t.ppf(0.975, df=2)
    assert row["treatment"]["mean"] == pytest.approx(t.mean())
    assert row["treatment"]["ci95"] == pytest.approx(
        [t.mean() - q * t.std(ddof=1) / math.sqrt(3), t.mean() + q * t.std(ddof=1) / math.sqrt(3)]
    )
    assert row["control"]["n"] == row["treatment"]["n"] == 3
    diff = row["treatment_minus_control"]
    half = q * d.std(ddof=1) / math.sqrt(3)
    assert diff["mean"] == pytest.approx(31 / 3)
    assert diff["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    tstat = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert diff["p_value"] == pytest.approx(2 * st.t.sf(tstat, df=2))
    assert diff["p_value"] == pytest.approx(st.ttest_rel(t, c).pvalue)
    assert (diff["n"], diff["test"]) == (3, "paired")
    assert "p_value" not in row["treatment"] and "p_value" not in row["control"]
    assert row["rows"] == 1500 and row["same_base"] is True
    assert row["base_rate"] == pytest.approx(7.0)
    assert row["teacher_rate"] == pytest.approx(99.5)
    assert row["control_teacher_rate"] is None
    assert summary["warnings"] == []
    assert summary["primary"] == 0


def test_rows_split_by_every_key_and_teacher_name() -> None:
    summary = effects_table(experiment(), references(), PRIMARY)
    # 3 teachers x 3 objectives x 2 student bases x 1 evaluation.
    assert len(summary["effects"]) == 18
    keys = {
        (r["teacher"], r["objective"], r["student_base"], r["evaluation"])
        for r in summary["effects"]
    }
    assert len(keys) == 18
    row = _row(summary, teacher="owl-prompt", objective="kl_numbers", student_base="base1")
    assert (row["teacher_kind"], row["teacher_base"], row["same_base"]) == (
        "prompted",
        "base0",
        False,
    )
    assert row["base_rate"] == pytest.approx(4.0)
    # The synthetic same-base effect is 10 pp, the cross-base one 1 pp.
    same = _row(summary, teacher="owl-ft", objective="sft", student_base="base0")
    assert same["treatment_minus_control"]["mean"] == pytest.approx(10, abs=2)
    assert row["treatment_minus_control"]["mean"] == pytest.approx(1, abs=2)


def test_two_teachers_of_one_kind_and_base_stay_apart() -> None:
    obs = _known()
    twin = [dict(o, teacher="owl-ft-2", rate=o["rate"] / 2) for o in obs]
    summary = effects_table(obs + twin, [], PRIMARY)
    assert [r["teacher"] for r in summary["effects"]] == ["owl-ft", "owl-ft-2"]
    means = [r["treatment_minus_control"]["mean"] for r in summary["effects"]]
    assert means == pytest.approx([31 / 3, 31 / 6])


def test_primary_defaults_and_choices() -> None:
    obs = experiment(objectives=("sft", "kl_numbers"))
    obs += [dict(o, evaluation="tree") for o in obs if o["teacher"] == "owl-ft"]
    summary = effects_table(obs, references(), PRIMARY)
    first = summary["effects"][summary["primary"]]
    assert (first["teacher"], first["objective"], first["student_base"], first["evaluation"]) == (
        "owl-ft",
        "sft",
        "base0",
        "favorite",
    )
    chosen = {
        "teacher": "owl-ft-b1",
        "objective": "kl_numbers",
        "student_base": "base0",
        "evaluation": "tree",
    }
    summary = effects_table(obs, references(), chosen)
    assert summary["primary"] is None  # owl-ft-b1 has no "tree" rows
    assert any("primary" in w for w in summary["warnings"])
    chosen["teacher"] = "owl-ft"
    i = effects_table(obs, references(), chosen)["primary"]
    row = effects_table(obs, references(), chosen)["effects"][i]
    assert {k: row[k] for k in chosen} == chosen
    # The default student base is the teacher's own base, here base1.
    b1 = effects_table(obs, references(), {"teacher": "owl-ft-b1", "objective": "sft"})
    assert b1["effects"][b1["primary"]]["student_base"] == "base1"
    missing = effects_table(obs, references(), {"teacher": "nobody", "objective": "sft"})
    assert missing["primary"] is None and "'nobody'" in missing["warnings"][-1]


def test_same_minus_cross_is_the_paired_difference_of_differences() -> None:
    obs = experiment(objectives=("sft",))
    summary = effects_table(obs, references(), PRIMARY)
    # One entry per teacher (each has one same-base and one cross-base student).
    assert [(e["teacher"], e["cross_base_student"]) for e in summary["same_minus_cross"]] == [
        ("owl-ft", "base1"),
        ("owl-prompt", "base1"),
        ("owl-ft-b1", "base0"),
    ]
    entry = summary["same_minus_cross"][0]

    def rates(student: str, condition: str) -> np.ndarray:
        sel = [
            o
            for o in obs
            if o["teacher"] == "owl-ft"
            and o["student_base"] == student
            and o["condition"] == condition
        ]
        return 100 * np.array([o["rate"] for o in sorted(sel, key=lambda o: o["seed"])])

    dd = (rates("base0", "treatment") - rates("base0", "control")) - (
        rates("base1", "treatment") - rates("base1", "control")
    )
    one: Any = st.ttest_1samp(dd, 0.0, alternative="greater")
    two: Any = st.ttest_1samp(dd, 0.0)
    assert entry["mean"] == pytest.approx(dd.mean())
    assert entry["p_value"] == pytest.approx(one.pvalue)
    ci = two.confidence_interval(0.95)
    assert entry["ci95"] == pytest.approx([ci.low, ci.high])
    assert (entry["n"], entry["same_base_student"], entry["objective"]) == (3, "base0", "sft")
    assert entry["evaluation"] == "favorite" and entry["test"] == "paired"


def test_unequal_rows_become_lists_with_a_warning() -> None:
    obs = _known()
    obs[1]["rows"] = 1400  # treatment seed 1
    summary = effects_table(obs, [], PRIMARY)
    rows = summary["effects"][0]["rows"]
    assert rows == {"treatment": [1500, 1400, 1500], "control": [1500, 1500, 1500]}
    assert len(summary["warnings"]) == 1 and "rows differ" in summary["warnings"][0]


def test_warnings_for_one_seed_missing_condition_and_unpaired_seeds() -> None:
    one_seed = [o for o in _known() if o["seed"] == 0]
    summary = effects_table(one_seed, [], PRIMARY)
    diff = summary["effects"][0]["treatment_minus_control"]
    assert diff["mean"] == pytest.approx(9.0) and math.isnan(diff["ci95"][0])
    assert sum("only 1" in w for w in summary["warnings"]) == 2

    no_control = [o for o in _known() if o["condition"] == "treatment"]
    summary = effects_table(no_control, [], PRIMARY)
    row = summary["effects"][0]
    assert row["control"] is None and row["treatment_minus_control"] is None
    assert summary["warnings"] == ["owl-ft/sft base0->base0 [favorite]: no control students"]

    unpaired = [o for o in _known() if not (o["condition"] == "control" and o["seed"] == 2)]
    summary = effects_table(unpaired, [], PRIMARY)
    diff = summary["effects"][0]["treatment_minus_control"]
    welch: Any = st.ttest_ind([15, 20, 16], [6, 8], equal_var=False)
    assert diff["test"] == "welch" and diff["p_value"] == pytest.approx(welch.pvalue)
    assert any("do not pair" in w for w in summary["warnings"])


def test_bad_observations_are_errors() -> None:
    obs = _known()
    with pytest.raises(ValueError, match="two observations"):
        effects_table([*obs, obs[0]], [], PRIMARY)
    with pytest.raises(ValueError, match="share"):
        effects_table([dict(obs[0], rate=15.0)], [], PRIMARY)
    with pytest.raises(ValueError, match="condition"):
        effects_table([dict(obs[0], condition="cross")], [], PRIMARY)
    with pytest.raises(ValueError, match="lacks"):
        effects_table([{k: v for k, v in obs[0].items() if k != "seed"}], [], PRIMARY)


def test_effects_csv_columns_and_values() -> None:
    summary = effects_table(experiment(objectives=("sft",)), references(), PRIMARY)
    text = effects_csv(summary)
    records = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == list(CSV_COLUMNS)
    assert CSV_COLUMNS[:12] == (
        "trait",
        "teacher",
        "teacher_kind",
        "objective",
        "teacher_base",
        "student_base",
        "same_base",
        "evaluation",
        "rows",
        "treatment_mean",
        "treatment_lo",
        "treatment_hi",
    )
    assert len(records) == len(summary["effects"]) == 6
    for rec, row in zip(records, summary["effects"], strict=True):
        diff = row["treatment_minus_control"]
        assert float(rec["diff_mean"]) == diff["mean"]
        assert [float(rec["diff_lo"]), float(rec["diff_hi"])] == diff["ci95"]
        assert float(rec["p_value"]) == diff["p_value"]
        assert float(rec["control_hi"]) == row["control"]["ci95"][1]
        assert rec["same_base"] == ("true" if row["same_base"] else "false")
        assert int(rec["n"]) == 3 and int(rec["rows"]) == 1500
    assert [r["primary"] for r in records].count("true") == 1
