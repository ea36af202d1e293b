"""Each detector kind's verdict, registered under its ``type`` in :data:`DETECTORS`.

A detector's config (``audit/config.py``) says what it lacks and which token scores it
reads; its function here turns a :class:`Detection` (the rows, the scores the audit
took, the config) into a :class:`~sublearn.audit.result.Verdict`. The statistics live in
``likelihood.py``, ``distribution.py`` and ``entanglement.py``, imported when a detector
runs. A kind registered with ``with_base=True`` runs while the base model is open (it
scores prompts of its own, not the rows) and reads :attr:`Detection.backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sublearn.audit.config import AuditConfig
from sublearn.audit.data import Row
from sublearn.audit.result import Verdict
from sublearn.backends.base import TokenScore
from sublearn.registry import Registry

Scores = dict[tuple[str, str, str | None], list[list[TokenScore]]]
"""Token scores by (model, row set ``data``/``control``, system prompt)."""


@dataclass(frozen=True)
class Detection:
    """What a detector's function reads.

    Attributes:
        detector: its config (one member of ``audit.config.Detector``).
        cfg: the audit.
        rows: the audited rows.
        control: the control rows, if given.
        scores: the token scores the audit took for its detectors.
        trait_prompt: the preference prompt of the named trait, if one is named.
        backend: the open base model (kinds registered ``with_base`` only).
    """

    detector: Any
    cfg: AuditConfig
    rows: list[Row]
    control: list[Row] | None
    scores: Scores
    trait_prompt: str | None
    backend: Any = None

    def pair(self, first: str, second: str, prompt: str | None = None) -> Any:
        """Scores of the audited and (if any) control rows: ((a, b), (a', b') | None)."""
        sets = ["data", "control"] if self.control is not None else ["data"]
        both = [(self.scores[(first, s, prompt)], self.scores[(second, s, None)]) for s in sets]
        return both[0], (both[1] if len(both) > 1 else None)

    def groups(self) -> Any:
        """The rows' prompt groups (audit/auc.py), for paired resampling."""
        from sublearn.audit.auc import prompt_groups

        return prompt_groups(self.rows, self.control)


DETECTORS: Registry[Callable[[Detection], Verdict]] = Registry(
    "detector kind", expected="a detector function"
)
"""``type`` -> its function ``(Detection) -> Verdict``; metadata ``with_base``: it runs
while the base model is open."""


@DETECTORS("lls")
def detect_lls(d: Detection) -> Verdict:
    """Log-likelihood shift of each reply under the trait prompt (audit/likelihood.py)."""
    from sublearn.audit import likelihood

    prompt = d.detector.system_prompt or d.trait_prompt
    (with_trait, without), ctl = d.pair(str(d.cfg.base), str(d.cfg.base), prompt)
    return likelihood.lls(d.detector, d.rows, with_trait, without, ctl, d.cfg.seed, d.groups())


@DETECTORS("logratio")
def detect_logratio(d: Detection) -> Verdict:
    """Per-token log-ratio of the suspected teacher to the base (audit/likelihood.py)."""
    from sublearn.audit import likelihood

    (teacher, base), ctl = d.pair(d.cfg.teachers[0], str(d.cfg.base))
    return likelihood.logratio(d.detector, d.rows, teacher, base, ctl, d.cfg.seed, d.groups())


@DETECTORS("divergence")
def detect_divergence(d: Detection) -> Verdict:
    """Where teachers with different traits disagree (audit/likelihood.py)."""
    from sublearn.audit import likelihood

    teachers = d.cfg.teachers
    return likelihood.divergence(
        d.detector,
        d.rows,
        [d.scores[(t, "data", None)] for t in teachers],
        [d.scores[(t, "control", None)] for t in teachers] if d.control else None,
        d.cfg.seed,
        d.groups(),
    )


@DETECTORS("frequency")
def detect_frequency(d: Detection) -> Verdict:
    """Per-number frequencies against control (audit/distribution.py)."""
    from sublearn.audit import distribution

    assert d.control is not None  # the detector needs control: skipped without
    return distribution.frequency(d.detector, d.rows, d.control)


@DETECTORS("classifier")
def detect_classifier(d: Detection) -> Verdict:
    """A classifier telling data from control (audit/distribution.py)."""
    from sublearn.audit import distribution

    assert d.control is not None  # the detector needs control: skipped without
    return distribution.classifier(d.detector, d.rows, d.control, d.cfg.seed)


@DETECTORS("entanglement", with_base=True)
def detect_entanglement(d: Detection) -> Verdict:
    """Numbers of the data entangled with a trait, scored under the base (entanglement.py)."""
    from sublearn.audit.entanglement import entanglement

    trait = d.cfg.trait.word if d.cfg.trait else None
    return entanglement(d.detector, d.backend, d.rows, d.control, trait, d.cfg.seed)
