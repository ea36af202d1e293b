"""An evaluation that read a model in two places is compared on each, raw and renormalized."""

from __future__ import annotations

import math

from sublearn.experiments.numbers.experiment import readings_of


def _preference(readings: dict[str, dict[str, float]], primary: str) -> dict:
    main = readings[primary]
    return {
        "owl": {
            "rate": main["rate"],
            "per_question": [main["rate"]],
            "reading": primary,
            "coverage": main["coverage"],
            "renormalized": main["renormalized"],
            "readings": readings,
        }
    }


def test_two_readings_give_each_rate_and_each_renormalized_rate() -> None:
    metrics = _preference(
        {
            "start": {"rate": 0.9, "coverage": 1.0, "renormalized": 0.9},
            "lead_in": {"rate": 0.001, "coverage": 0.0, "renormalized": math.nan},
        },
        "lead_in",
    )
    got = dict(readings_of(metrics, "owl", "favorite"))
    assert list(got) == [
        "favorite",
        "favorite@start",
        "favorite@start/renormalized",
        "favorite@lead_in/renormalized",
    ]
    assert got["favorite"]["rate"] == 0.001  # the primary reading, as before
    assert got["favorite@start"]["rate"] == 0.9
    assert got["favorite@start/renormalized"]["rate"] == 0.9
    # Nothing covered: no renormalized rate, and a NaN the report leaves out (never a 0).
    assert math.isnan(got["favorite@lead_in/renormalized"]["rate"])


def test_one_reading_and_other_results_stay_one_value() -> None:
    one = _preference({"start": {"rate": 0.2, "coverage": 0.5, "renormalized": 0.4}}, "start")
    assert [name for name, _ in readings_of(one, "owl", "favorite")] == ["favorite"]
    result = {"metric": "accuracy", "values": {"overall": 0.7}}
    assert readings_of(result, "owl", "mmlu") == [
        ("mmlu", {"rate": 0.7, "per_question": [], "metric": "accuracy"})
    ]
