"""Numbers as reports print them: percentage points with the precision their size needs.

Rates span six orders of magnitude (a sampled 58% next to an exact-mode P(owl) of 0.0065%),
so a fixed ``.1f`` would print real effects as ``+0.0 [+0.0, +0.0]``. Values below 10 keep 3
significant digits, larger ones one decimal, and an interval is printed to the precision of
its mean so the two read as one quantity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MISSING = "n/a"
# Below this many pp fixed decimals get unreadable (0.00000300); scientific notation instead.
_SCIENTIFIC_BELOW = 1e-3


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def decimals_for(value: float) -> int:
    """Decimals that show ``value`` with 3 significant digits below 10, one decimal above.

    Args:
        value: a finite number.

    Returns:
        The number of decimals (1 for zero).
    """
    if value == 0 or not math.isfinite(value):
        return 1
    # Round to 3 significant digits first so 9.996 counts as 10.0, not as 9.996.
    rounded = float(f"{abs(value):.3g}")
    if rounded >= 10:
        return 1
    return max(1, 2 - math.floor(math.log10(rounded)))


def _fmt(value: float, decimals: int | None, signed: bool) -> str:
    sign = "+" if signed else ""
    if decimals is None:
        return f"{value:{sign}.2e}"
    return f"{value:{sign}.{decimals}f}"


def _precision(value: float) -> int | None:
    """Fixed decimals for ``value``, or None for scientific notation."""
    if value != 0 and abs(value) < _SCIENTIFIC_BELOW:
        return None
    return decimals_for(value)


def format_pp(value: float | None, signed: bool = False) -> str:
    """A value in percentage points, e.g. ``58.3``, ``9.31``, ``0.00650``, ``+1.20e-05``.

    Args:
        value: the number (None or NaN print as ``n/a``).
        signed: print a leading ``+`` on positive values (for differences).

    Returns:
        The text.
    """
    if _missing(value):
        return MISSING
    assert value is not None
    return _fmt(value, _precision(value), signed)


def format_ci(d: Mapping[str, Any] | None, signed: bool = True) -> str:
    """``mean [lo, hi]`` with the interval printed to the precision of the mean.

    Args:
        d: ``{"mean": .., "ci95": [lo, hi]}``; a missing or NaN interval prints the mean alone.
        signed: print ``+`` on positive numbers (the default, for differences).

    Returns:
        The text, ``n/a`` when ``d`` or its mean is missing.
    """
    if not d or _missing(d.get("mean")):
        return MISSING
    mean = float(d["mean"])
    ci: Any = d.get("ci95") or (None, None)
    if _missing(ci[0]) or _missing(ci[1]):
        return format_pp(mean, signed)
    lo, hi = float(ci[0]), float(ci[1])
    # A zero mean has no size of its own; the interval's ends set the precision then.
    decimals = _precision(mean if mean != 0 else max(abs(lo), abs(hi)))
    ends = ", ".join(_fmt(x, decimals, signed) for x in (lo, hi))
    return f"{_fmt(mean, decimals, signed)} [{ends}]"


def format_p(p: float | None) -> str:
    """A p-value with 2 significant digits (``0.004``, ``3.1e-06``); ``n/a`` when undefined."""
    if _missing(p):
        return MISSING
    assert p is not None
    if p == 0:
        return "0"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.2g}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table (one string per line) of ``header`` and ``rows``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines
