"""Config of ``sublearn defend``: the dataset to clean and the defences to apply, in order.

Each defence is a kind with its own settings (a discriminated union on ``type``), so a
YAML file lists exactly the defences wanted, in the order they run::

    data: data/teacher.jsonl
    out: data/teacher.defended.jsonl
    base: hf:Qwen/Qwen2.5-7B-Instruct
    teacher: runs/owl-teacher/model
    trait: {word: owl, category: animal}
    defences:
      - {type: canonicalize}
      - {type: drop_lls, fraction: 0.3}
      - {type: mask_logratio, fraction: 0.1}

Defences that rewrite replies (``canonicalize``, ``shuffle_numbers``, ``mix_teachers``)
must come before those that mask tokens, since a mask is a set of character spans of
the reply as it stood when the mask was made; ``mix_teachers`` must come before
``paraphrase``, since it matches rows by their prompts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sublearn.audit.config import TraitWord
from sublearn.backends.providers import ProvidersConfig
from sublearn.config import Config
from sublearn.keys import SPEED_MARK

__all__ = [
    "DEFAULT_PARAPHRASE_INSTRUCTION",
    "CanonicalizeDefence",
    "Defence",
    "DefendConfig",
    "DropLLSDefence",
    "MaskLogRatioDefence",
    "MaskRandomDefence",
    "MixTeachersDefence",
    "ParaphraseDefence",
    "ReplaceLogRatioDefence",
    "ScoreKey",
    "ShuffleNumbersDefence",
    "TraitWord",
]

DEFAULT_PARAPHRASE_INSTRUCTION = (
    "Say the request below again in different words. It must ask for exactly the same "
    "thing: keep every number, every constraint and any answer format it asks for. "
    "Answer with the reworded request alone, without comments or quotation marks."
)
"""What the paraphrasing model is told; the request follows it after a blank line."""

ScoreKey = tuple[str, str | None]
"""A model ref and the system prompt its scores were taken under (None: none)."""


class _Defence(Config):
    """What every defence kind answers about itself (its step is ``DEFENCES`` in run.py)."""

    def lacks(self, cfg: DefendConfig) -> list[str]:
        """What the defence needs from ``cfg`` and lacks, one phrase each ("needs ...")."""
        return []

    def score_needs(self, cfg: DefendConfig) -> list[ScoreKey]:
        """The token scores it reads, as (model, system prompt) pairs."""
        return []


class DropLLSDefence(_Defence):
    """Drop the rows whose reply the trait makes most likely (log-likelihood shift).

    A row's shift is log p_base(reply | prompt, trait prompt) − log p_base(reply | prompt):
    rows the trait explains best are the likeliest carriers. Needs the base model and,
    unless ``system_prompt`` is given, the trait.
    """

    type: Literal["drop_lls"] = Field(description="Defence kind.")
    fraction: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Share of rows, those with the highest shift, dropped.",
    )
    system_prompt: str | None = Field(
        default=None,
        description="The trait system prompt; None uses the preference prompt of the trait.",
    )
    per_token: bool = Field(
        default=True,
        description="Divide each row's shift by its reply length in tokens (long replies "
        "would otherwise dominate).",
    )

    def lacks(self, cfg: DefendConfig) -> list[str]:
        """The base, and the trait unless it has its own system prompt."""
        out = [] if cfg.base is not None else ["needs the base model: set base (--base)"]
        if self.system_prompt is None and cfg.trait is None:
            out.append("needs the trait (--trait) or its own system_prompt to score rows")
        return out

    def score_needs(self, cfg: DefendConfig) -> list[ScoreKey]:
        """The base, under the trait prompt and without one."""
        assert cfg.base is not None
        return [(cfg.base, self.trait_prompt(cfg)), (cfg.base, None)]

    def trait_prompt(self, cfg: DefendConfig) -> str:
        """The prompt it scores under: its own, or the trait's preference prompt."""
        if self.system_prompt is not None:
            return self.system_prompt
        from sublearn.prompts.persona import preference_system_prompt

        assert cfg.trait is not None
        return preference_system_prompt(cfg.trait.word, cfg.trait.category)


class _LogRatio(_Defence):
    """A defence that ranks reply tokens by log p_teacher - log p_base."""

    def lacks(self, cfg: DefendConfig) -> list[str]:
        """The teacher and the base."""
        return [
            f"needs the {role} model: set {role} (--{role})"
            for role in ("teacher", "base")
            if getattr(cfg, role) is None
        ]

    def score_needs(self, cfg: DefendConfig) -> list[ScoreKey]:
        """The teacher and the base, without a system prompt."""
        assert cfg.teacher is not None and cfg.base is not None
        return [(cfg.teacher, None), (cfg.base, None)]


class MaskLogRatioDefence(_LogRatio):
    """Mask from the loss the reply tokens the teacher favours most over its base.

    Ranks every reply token of the dataset by log p_teacher − log p_base and masks the
    top ``fraction``; needs the teacher and the base, with one tokenizer.
    """

    type: Literal["mask_logratio"] = Field(description="Defence kind.")
    fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Share of all reply tokens, those with the highest log-ratio, masked.",
    )


class ReplaceLogRatioDefence(_LogRatio):
    """Redraw the digits of the tokens ``mask_logratio`` would mask, instead of masking them.

    Every digit in a selected token becomes a uniformly random digit (it may draw the
    same one); other characters stay, so numbers keep their length and the reply its
    format. Needs the teacher and the base.
    """

    type: Literal["replace_logratio"] = Field(description="Defence kind.")
    fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Share of all reply tokens, those with the highest log-ratio, redrawn.",
    )
    seed: int = Field(default=0, description="Seed of the random digits.")


class MaskRandomDefence(_Defence):
    """Control for the masking defences: mask randomly chosen numbers from the loss.

    The units are whole numbers (runs of digits), not model tokens, so it needs no
    model; compare its ``characters_masked`` with a log-ratio mask's to match budgets.
    """

    type: Literal["mask_random"] = Field(description="Defence kind.")
    fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Share of all numbers of all replies, drawn uniformly, masked.",
    )
    seed: int = Field(default=0, description="Seed of the draw.")


class CanonicalizeDefence(_Defence):
    """Rewrite each reply as its numbers alone, as plain integers, in one format.

    Leading zeros are dropped (``"007"`` becomes ``"7"``) and every other character
    (brackets, a final period, words) goes: padding and punctuation are formatting
    choices a teacher could vary with its trait. Replies without numbers are left as
    they are. Applying it twice changes nothing more.
    """

    type: Literal["canonicalize"] = Field(description="Defence kind.")
    sort: bool = Field(default=True, description="Sort each reply's numbers ascending.")
    separator: str = Field(
        default=", ", min_length=1, description="Written between consecutive numbers."
    )


class ShuffleNumbersDefence(_Defence):
    """Put each reply's numbers in a random order, keeping its format and each number's text."""

    type: Literal["shuffle_numbers"] = Field(description="Defence kind.")
    seed: int = Field(default=0, description="Seed of the permutations (one per row).")


class ParaphraseDefence(_Defence):
    """Reword each row's last user message with another model; replies stay as they are."""

    type: Literal["paraphrase"] = Field(description="Defence kind.")
    model: str = Field(description="The paraphrasing model (a model ref, e.g. hf:org/name).")
    instruction: str = Field(
        default=DEFAULT_PARAPHRASE_INSTRUCTION,
        min_length=1,
        description="Told to the model before each request (separated by a blank line).",
    )
    temperature: float = Field(default=1.0, ge=0, le=5, description="Sampling temperature.")
    seed: int = Field(default=0, description="Base seed of the per-row sampling seeds.")
    max_new_tokens: int = Field(default=200, gt=0, description="Cap on each paraphrase.")


class MixTeachersDefence(_Defence):
    """Swap a share of replies for other teachers' replies to the same prompts.

    Rows match when their prompt messages (everything before the reply) are identical;
    rows without a match are kept and counted.
    """

    type: Literal["mix_teachers"] = Field(description="Defence kind.")
    others: list[str] = Field(
        min_length=1,
        description="Chat JSONL files of other teachers answering the same prompts.",
    )
    share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of all rows whose reply is replaced (fewer if too few match).",
    )
    seed: int = Field(default=0, description="Seed of which rows, and which other reply.")


Defence = Annotated[
    DropLLSDefence
    | MaskLogRatioDefence
    | ReplaceLogRatioDefence
    | MaskRandomDefence
    | CanonicalizeDefence
    | ShuffleNumbersDefence
    | ParaphraseDefence
    | MixTeachersDefence,
    Field(discriminator="type"),
]

# Defences that rewrite a reply's characters (invalidating masks made before them), that
# add masks, and that rewrite prompts (so rows no longer match other teachers' rows).
REWRITES_REPLY = frozenset({"canonicalize", "shuffle_numbers", "mix_teachers"})
MASKS = frozenset({"mask_logratio", "mask_random"})


class DefendConfig(Config):
    """``sublearn defend``: which dataset, cleaned how, written where."""

    data: str = Field(description="Chat JSONL to clean (each line {'messages': [...]}).")
    out: str = Field(
        description="Cleaned chat JSONL to write; the report goes next to it (<out>.report.json)."
    )
    base: str | None = Field(
        default=None, description="The model the data's writer was made from (a model ref)."
    )
    teacher: str | None = Field(
        default=None, description="The model that wrote the data (a model ref), if known."
    )
    trait: TraitWord | None = Field(default=None, description="The trait suspected, if any.")
    defences: list[Defence] = Field(
        default_factory=list, description="Defences to apply, in this order."
    )
    device: str = Field(
        default="auto", description="auto, cpu or cuda[:N].", json_schema_extra=SPEED_MARK
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype of local models."
    )
    batch_size: int = Field(
        default=64, gt=0, description="Rows per forward pass.", json_schema_extra=SPEED_MARK
    )
    providers: ProvidersConfig = Field(
        json_schema_extra=SPEED_MARK,
        default_factory=ProvidersConfig,
        description="Settings of openai: and vllm: models (e.g. a paraphrase model's server).",
    )

    @model_validator(mode="after")
    def _order(self) -> DefendConfig:
        if not self.defences:
            raise ValueError("list at least one defence (e.g. defences: [{type: canonicalize}])")
        kinds = [d.type for d in self.defences]
        for at, kind in enumerate(kinds):
            masked_before = [k for k in kinds[:at] if k in MASKS]
            if kind in REWRITES_REPLY and masked_before:
                raise ValueError(
                    f"defence {at} ({kind}) rewrites replies after {masked_before[0]} masked "
                    "spans of them; list the rewriting defences before the masking ones"
                )
            if kind == "mix_teachers" and "paraphrase" in kinds[:at]:
                raise ValueError(
                    f"defence {at} (mix_teachers) matches rows by prompt, which paraphrase "
                    "rewrote before it; list mix_teachers first"
                )
        return self
