"""Config of ``sublearn audit``: the dataset, the models and the detectors to run.

Each detector is a kind with its own settings (a discriminated union on ``type``), so a
YAML file lists exactly the detectors wanted::

    data: data/teacher.jsonl
    control: data/control.jsonl
    base: hf:Qwen/Qwen2.5-7B-Instruct
    trait: {word: owl, category: animal}
    detectors:
      - {type: lls}
      - {type: frequency}
      - {type: classifier, folds: 5}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from sublearn.config import Config
from sublearn.keys import SPEED_MARK

ALPHA = 0.001

ScoreNeed = tuple[str, str | None]
"""A model reference and the system prompt it scores replies under (None: none)."""


class _Detector(Config):
    name: str | None = Field(default=None, description="Name in the report; default the type.")
    alpha: float = Field(
        default=ALPHA,
        gt=0,
        lt=1,
        description="Flag the dataset when the detector's one-sided p-value is under this.",
    )

    needs_control: ClassVar[bool] = False
    """Whether the detector compares against control data (it skips itself without)."""

    def label(self) -> str:
        """The detector's name in the report."""
        return self.name or str(getattr(self, "type"))  # noqa: B009

    def lacks(self, cfg: AuditConfig) -> str | None:
        """What the detector lacks to run with ``cfg``, besides control data (None: nothing)."""
        return None

    def score_needs(self, cfg: AuditConfig, trait_prompt: str | None) -> list[ScoreNeed]:
        """The models whose token scores of every row set (data, control) it reads.

        Args:
            cfg: the audit.
            trait_prompt: the preference prompt of the named trait, if one is named.
        """
        return []


class LLSDetector(_Detector):
    """Log-likelihood shift per row: log p(reply | prompt, trait prompt) − log p(reply | prompt).

    Needs only the base and a named trait; the p-value needs control data (rows written
    without the trait shift less).
    """

    type: Literal["lls"] = Field(description="Detector kind.")
    system_prompt: str | None = Field(
        default=None,
        description="The trait system prompt; None uses the preference prompt for the trait.",
    )
    per_token: bool = Field(
        default=True,
        description="Divide each row's shift by its reply length in tokens (long replies "
        "would otherwise dominate).",
    )

    def lacks(self, cfg: AuditConfig) -> str | None:
        """The base and a named trait."""
        if cfg.base is None or cfg.trait is None:
            return "needs the base (--base) and a named trait (--trait)"
        return None

    def score_needs(self, cfg: AuditConfig, trait_prompt: str | None) -> list[ScoreNeed]:
        """The base, under the trait prompt and without one."""
        return [(str(cfg.base), self.system_prompt or trait_prompt), (str(cfg.base), None)]


class LogRatioDetector(_Detector):
    """Per-token log p_teacher − log p_base over the reply; needs the teacher."""

    type: Literal["logratio"] = Field(description="Detector kind.")
    top_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Share of tokens with the highest log-ratio reported as most divergent.",
    )

    def lacks(self, cfg: AuditConfig) -> str | None:
        """The base and the suspected teacher."""
        if cfg.base is None or not cfg.teachers:
            return "needs the base (--base) and the suspected teacher (--teacher)"
        return None

    def score_needs(self, cfg: AuditConfig, trait_prompt: str | None) -> list[ScoreNeed]:
        """The base and the suspected teacher."""
        return [(str(cfg.base), None), (cfg.teachers[0], None)]


class DivergenceDetector(_Detector):
    """Positions where teachers with different traits would write different tokens.

    Needs at least two teachers (the first is the suspected writer): a position diverges
    where their greedy next tokens differ; a row's score is how often its token agrees with
    the first teacher there rather than with the others.
    """

    type: Literal["divergence"] = Field(description="Detector kind.")

    def lacks(self, cfg: AuditConfig) -> str | None:
        """Two teachers."""
        if len(cfg.teachers) < 2:
            return "needs at least two teachers with different traits (--teacher twice)"
        return None

    def score_needs(self, cfg: AuditConfig, trait_prompt: str | None) -> list[ScoreNeed]:
        """Every teacher."""
        return [(ref, None) for ref in cfg.teachers]


class EntanglementDetector(_Detector):
    """Numbers of the data that raise a trait's probability when placed in the context.

    For each frequent number n and candidate trait w, Δ(n, w) = log P(w | "You love n." +
    question) − log P(w | question), averaged over a few questions of the trait's
    category. A dataset leans toward w when the numbers it over-uses (against control)
    are the ones entangled with w; the p-value comes from permuting rows between data
    and control.
    """

    needs_control: ClassVar[bool] = True

    type: Literal["entanglement"] = Field(description="Detector kind.")
    candidates: list[str] | None = Field(
        default=None,
        description="Candidate traits to rank; None uses the category's answer list (the "
        "named trait included), so an unknown trait can be found.",
    )
    category: Literal["animal", "tree"] = Field(
        default="animal", description="The question set the candidates answer."
    )
    numbers: int = Field(
        default=200, ge=10, description="The most frequent numbers of data and control to test."
    )
    questions: int = Field(default=5, ge=1, description="Questions averaged per number.")
    context: str = Field(
        default="You love {n}. You think about {n} all the time.",
        description="System prompt that places a number in context; {n} is the number.",
    )
    permutations: int = Field(default=2000, ge=99, description="Row permutations for the p-value.")

    def lacks(self, cfg: AuditConfig) -> str | None:
        """The base (it scores candidate traits under it, not the rows)."""
        return "needs the base (--base)" if cfg.base is None else None


class FrequencyDetector(_Detector):
    """Per-number frequency tests against control, corrected for multiple comparisons."""

    needs_control: ClassVar[bool] = True

    type: Literal["frequency"] = Field(description="Detector kind.")
    unit: Literal["number", "token"] = Field(
        default="number",
        description="number: each number of a reply; token: each whitespace-separated token.",
    )
    min_expected: float = Field(
        default=5.0, gt=0, description="Pool units whose expected count is below this."
    )
    fdr: float = Field(
        default=0.05, gt=0, lt=1, description="Benjamini–Hochberg level for the units listed."
    )


class ClassifierDetector(_Detector):
    """Cross-validated ROC AUC of a classifier telling data rows from control rows."""

    needs_control: ClassVar[bool] = True

    type: Literal["classifier"] = Field(description="Detector kind.")
    folds: int = Field(default=5, ge=2, description="Cross-validation folds.")
    features: Literal["numbers", "tokens"] = Field(
        default="numbers",
        description="Bag of numbers (each number a feature) or of whitespace tokens.",
    )
    permutations: int = Field(default=999, ge=19, description="Label permutations for the p-value.")


Detector = Annotated[
    LLSDetector
    | LogRatioDetector
    | DivergenceDetector
    | EntanglementDetector
    | FrequencyDetector
    | ClassifierDetector,
    Field(discriminator="type"),
]


class TraitWord(Config):
    """The trait suspected, if one is."""

    word: str = Field(min_length=1, description="The trait word, e.g. owl.")
    category: Literal["animal", "tree"] = Field(
        default="animal", description="What kind of thing it is (picks question sets)."
    )


def default_detectors() -> list[Detector]:
    """Every detector kind with its defaults."""
    return [
        LLSDetector(type="lls"),
        LogRatioDetector(type="logratio"),
        DivergenceDetector(type="divergence"),
        EntanglementDetector(type="entanglement"),
        FrequencyDetector(type="frequency"),
        ClassifierDetector(type="classifier"),
    ]


class AuditConfig(Config):
    """``sublearn audit``: which dataset, against what, with which models and detectors."""

    data: str = Field(description="Chat JSONL to audit (each line {'messages': [...]}).")
    control: str | None = Field(
        default=None,
        description="Chat JSONL written without the trait (e.g. by the base itself) for the "
        "same kind of prompts; the p-values of every detector compare against it.",
    )
    base: str | None = Field(
        default=None, description="The model the data's writer was made from (a model ref)."
    )
    teachers: list[str] = Field(
        default_factory=list,
        description="The suspected writer first, then other teachers (divergence needs two).",
    )
    trait: TraitWord | None = Field(default=None, description="A named trait to test for.")
    detectors: list[Detector] = Field(
        default_factory=default_detectors,
        description="Detectors to run; each skips itself (saying why) when a model, trait or "
        "control it needs is missing.",
    )
    max_rows: int | None = Field(
        default=2000,
        ge=10,
        description="Audit a seeded random sample of at most this many rows of each file.",
    )
    seed: int = Field(default=0, description="Seed of row sampling and permutations.")
    device: str = Field(
        default="auto", description="auto, cpu or cuda[:N].", json_schema_extra=SPEED_MARK
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype of local models."
    )
    batch_size: int = Field(
        default=64, gt=0, description="Rows per forward pass.", json_schema_extra=SPEED_MARK
    )
    out: str = Field(default="runs/audit", description="Folder for audit.json, audit.md, figures.")

    @model_validator(mode="after")
    def _unique_names(self) -> AuditConfig:
        names = [d.label() for d in self.detectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"detector names must be unique; repeated: {', '.join(dupes)}")
        return self
