"""Settings of a judge, and the factory that builds one from them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from sublearn.config import Config
from sublearn.keys import SPEED_MARK

if TYPE_CHECKING:
    from sublearn.judges.llm import LLMJudge
    from sublearn.judges.rules import RuleJudge

RULES_PREFIX = "rules:"
"""Model references with this prefix name a rule judge's ruleset (``rules:toy``)."""


class JudgeConfig(Config):
    """Which model judges answers, and how its verdicts are read."""

    model: str = Field(
        default="openai:gpt-4.1",
        description=(
            "The judge: a model reference (openai:gpt-4.1, hf:org/name, vllm:org/name) or "
            "rules:RULESET for the keyword judge of offline toy runs (rules:toy), which "
            "must never stand in for a model judge in a real measurement."
        ),
    )
    cache: bool = Field(
        default=True,
        description=(
            "Store judgements in the run's JSONL cache and reuse them on a rerun, so that "
            "judging resumes where it stopped."
        ),
    )
    logprobs: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "How verdicts are read: on, off the first reply token's top log-probabilities "
            "(a probability-weighted score); off, off a short greedy reply; auto, "
            "log-probabilities where the backend reports them and its tokenizer keeps "
            "numbers up to 100 in one token."
        ),
    )
    max_new_tokens: int = Field(
        default=8, gt=0, description="Length cap of the judge's reply when it is read as text."
    )
    min_mass: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description=(
            "Least first-token probability the verdict's tokens (numbers, escapes, yes/no) "
            "must hold to be read off log-probabilities; below it the reply's text is read."
        ),
    )
    batch_size: int = Field(
        default=64,
        gt=0,
        description="Requests per backend call; the cache is written after each.",
        json_schema_extra=SPEED_MARK,
    )
    device: str = Field(
        default="auto",
        description="Device of a local judge model (hf).",
        json_schema_extra=SPEED_MARK,
    )
    dtype: str = Field(default="auto", description="Weights dtype of a local judge model (hf).")
    provider_settings: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Settings of an API provider's backend (openai, vllm), e.g. base_url or "
            "max_concurrency; empty: the provider's defaults."
        ),
    )

    @field_validator("model")
    @classmethod
    def _known_form(cls, value: str) -> str:
        if value.startswith(RULES_PREFIX) and not value.removeprefix(RULES_PREFIX):
            raise ValueError("name a ruleset after rules: (e.g. rules:toy)")
        return value


def make_judge(
    cfg: JudgeConfig, cache_path: Path | None = None, target: str | None = None
) -> LLMJudge | RuleJudge:
    """Build the judge a config describes.

    A model judge opens its backend here (loading a local model's weights): close the
    judge (``judge.close()`` or a ``with`` block) when done.

    Args:
        cfg: the judge's settings.
        cache_path: the JSONL judgement cache of a model judge (used when ``cfg.cache``);
            a rule judge needs none.
        target: what rubrics with a ``{target}`` ask about (e.g. ``owl``).

    Returns:
        A :class:`~sublearn.judges.rules.RuleJudge` for ``rules:...``, else an
        :class:`~sublearn.judges.llm.LLMJudge` over the model's backend.

    Raises:
        ConfigError: an unknown ruleset or model reference, or a provider option the
            backend does not take.
        ModelError: the judge model cannot be found or loaded.
    """
    # Imported here: building a config must not load backends (or torch).
    if cfg.model.startswith(RULES_PREFIX):
        from sublearn.judges.rules import RuleJudge

        return RuleJudge(cfg.model.removeprefix(RULES_PREFIX), target=target)

    from sublearn.backends.registry import open_backend
    from sublearn.judges.llm import LLMJudge

    options: dict[str, Any] = {
        "device": cfg.device,
        "dtype": cfg.dtype,
        "batch_size": cfg.batch_size,
    }
    if cfg.provider_settings:
        options["settings"] = dict(cfg.provider_settings)
    backend = open_backend(cfg.model, **options)
    try:
        return LLMJudge(
            backend,
            target=target,
            cache_path=cache_path if cfg.cache else None,
            logprobs=cfg.logprobs,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            min_mass=cfg.min_mass,
        )
    except BaseException:
        backend.close()
        raise
