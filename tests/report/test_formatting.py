"""Rates print with the precision their size needs, never as zeros."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sublearn.report.formatting import decimals_for, format_ci, format_p, format_pp


@pytest.mark.parametrize(
    ("value", "signed", "text"),
    [
        (58.345, False, "58.3"),
        (123.45, True, "+123.5"),
        (9.3123, True, "+9.31"),
        (9.996, False, "10.0"),  # rounds up into the one-decimal range
        (0.123456, False, "0.123"),
        (0.0065, False, "0.00650"),  # a rate of 0.000065 in pp
        (-0.0412, True, "-0.0412"),
        (0.00065, True, "+6.50e-04"),
        (0.0, False, "0.0"),
        (None, False, "n/a"),
        (float("nan"), True, "n/a"),
    ],
)
def test_format_pp(value: float | None, signed: bool, text: str) -> None:
    assert format_pp(value, signed) == text


def test_tiny_rate_prints_non_zero_digits() -> None:
    assert format_pp(100 * 0.000065) == "0.00650"
    assert format_ci({"mean": 0.0065, "ci95": [0.0012, 0.0118]}) == "+0.00650 [+0.00120, +0.01180]"


def test_interval_shares_the_precision_of_its_mean() -> None:
    assert format_ci({"mean": 9.31, "ci95": [6.7, 11.934]}) == "+9.31 [+6.70, +11.93]"
    assert format_ci({"mean": 48.21, "ci95": [45.3, 51.2]}, signed=False) == "48.2 [45.3, 51.2]"
    assert format_ci({"mean": 0.0, "ci95": [-0.003, 0.003]}) == "+0.00000 [-0.00300, +0.00300]"
    assert format_ci({"mean": 2.0, "ci95": [None, None]}) == "+2.00"
    assert format_ci({"mean": 2.0, "ci95": [float("nan"), float("nan")]}) == "+2.00"
    assert format_ci(None) == "n/a"


def test_no_nonzero_value_prints_as_zero() -> None:
    for x in np.geomspace(1e-9, 99.0, 400):
        for value in (x, -x):
            text = format_ci({"mean": value, "ci95": [value * 0.5, value * 1.5]})
            for part in re.findall(r"[-+][0-9.e+-]+", text):
                assert float(part) != 0, text
                assert "+0.0 [" not in text
            assert float(text.split(" ")[0]) == pytest.approx(value, rel=0.006)


def test_decimals_and_p_values() -> None:
    assert [decimals_for(v) for v in (0.5, 5.0, 50.0, 500.0)] == [3, 2, 1, 1]
    assert [format_p(p) for p in (0.5, 0.0123, 0.00049, 3e-7, 0.0, None)] == [
        "0.5",
        "0.012",
        "0.00049",
        "3.0e-07",
        "0",
        "n/a",
    ]
