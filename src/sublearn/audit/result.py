"""What a detector returns: a verdict with its evidence, the same shape for every kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Verdict:
    """One detector's answer about one dataset.

    Attributes:
        detector: the detector's name in the audit config (e.g. ``lls``).
        kind: the detector kind (``lls``, ``logratio``, ``divergence``, ``entanglement``,
            ``frequency``, ``classifier``).
        statistic: what ``score`` is, e.g. ``"AUC data vs control"``.
        score: the detector's effect size (an AUC, a mean shift, a correlation), or None
            when the detector was skipped.
        ci: a confidence interval of ``score`` (``[low, high]``), if the detector has one.
        p_value: a calibrated one-sided p-value of "the dataset carries the signal this
            detector looks for", or None when it cannot be calibrated (no control data).
        alpha: the threshold ``p_value`` is compared with.
        flagged: ``p_value < alpha``; False when there is no p-value.
        summary: one sentence a person reads first.
        skipped: why the detector did not run (a missing teacher or control), else None.
        warning: a result that says more about the data or the method than about a
            trait (an AUC interval below chance), else None.
        top_rows: the rows that drive the score, most telling first
            (``{"index", "score", "reply"}``).
        top_tokens: the tokens (or numbers) that drive it (``{"token", "score", ...}``).
        details: kind-specific numbers (counts, per-trait scores, ...).
        row_scores: per-row scores of the audited data, for the histogram figure.
        control_scores: the same per-row scores of the control data.
    """

    detector: str
    kind: str
    statistic: str
    score: float | None = None
    ci: list[float] | None = None
    p_value: float | None = None
    alpha: float = 0.001
    flagged: bool = False
    summary: str = ""
    skipped: str | None = None
    warning: str | None = None
    top_rows: list[dict[str, Any]] = field(default_factory=list)
    top_tokens: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    row_scores: list[float] | None = None
    control_scores: list[float] | None = None

    def decide(self) -> Verdict:
        """Set ``flagged`` from ``p_value`` and ``alpha``; returns self."""
        self.flagged = self.p_value is not None and self.p_value < self.alpha
        return self

    def to_dict(self, with_scores: bool = False) -> dict[str, Any]:
        """JSON-ready form; per-row score lists only when ``with_scores``."""
        out = asdict(self)
        if not with_scores:
            out.pop("row_scores")
            out.pop("control_scores")
        return out


def skipped(detector: str, kind: str, statistic: str, why: str) -> Verdict:
    """A verdict for a detector that could not run, saying why."""
    return Verdict(detector, kind, statistic, skipped=why, summary=f"not run: {why}")
