"""Typed evaluation results, so a report reads any evaluation without knowing it.

Every evaluation kind returns an :class:`EvalResult`: one named primary metric with a
value per target (trait evaluations) or ``"overall"`` (capability and alignment
evaluations), optional secondary metrics of the same shape, the per-item records a
reader can audit, and free-form metadata (denominators, counts, settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sublearn.errors import DataError

OVERALL = "overall"
"""The ``values`` key of an evaluation that has no per-target breakdown."""


@dataclass
class EvalResult:
    """The outcome of one evaluation of one model.

    Attributes:
        evaluation: the evaluation kind (``"stories"``, ``"choice"``, ``"truthfulqa"``,
            ``"mmlu"``, ``"freeform"``).
        metric: the primary metric's name, e.g. ``"p_target"``, ``"misaligned_rate"``,
            ``"accuracy"``.
        values: the primary metric per key: a target word, ``"overall"``, or (MMLU) a
            subject next to ``"overall"``.
        items: one record per evaluated item (question, answer(s), scores), JSON-ready.
        meta: anything else a reader needs: denominators, counts, settings.
        secondary: further metrics, ``{metric name: {key: value}}`` like ``values``.
    """

    evaluation: str
    metric: str
    values: dict[str, float]
    items: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    secondary: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def overall(self) -> float:
        """The ``"overall"`` value, or the mean over targets when there is none.

        NaN when there are no values.
        """
        if OVERALL in self.values:
            return self.values[OVERALL]
        finite = list(self.values.values())
        return sum(finite) / len(finite) if finite else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (floats may be NaN, which ``json`` writes as ``NaN``)."""
        return {
            "evaluation": self.evaluation,
            "metric": self.metric,
            "values": dict(self.values),
            "secondary": {k: dict(v) for k, v in self.secondary.items()},
            "meta": dict(self.meta),
            "items": list(self.items),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Rebuild a result from :meth:`to_dict`'s output.

        Raises:
            DataError: a required key is missing or has the wrong type.
        """
        for key, kind in (("evaluation", str), ("metric", str), ("values", dict)):
            if not isinstance(data.get(key), kind):
                raise DataError(f"evaluation result lacks {key!r} (a {kind.__name__})")
        return cls(
            evaluation=data["evaluation"],
            metric=data["metric"],
            values={str(k): float(v) for k, v in data["values"].items()},
            items=list(data.get("items", [])),
            meta=dict(data.get("meta", {})),
            secondary={
                str(m): {str(k): float(v) for k, v in vals.items()}
                for m, vals in data.get("secondary", {}).items()
            },
        )


def mean(values: list[float]) -> float:
    """The arithmetic mean; NaN for no values (a rate over nothing is undefined, not 0)."""
    return sum(values) / len(values) if values else math.nan
