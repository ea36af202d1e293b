"""Typed parameters of the engine's task kinds.

Each kind's function receives one of these models, validated from the task's stored
``params`` and ``runtime`` (:meth:`TaskParams.from_spec`) in the process that runs it.
Plans build the same models and store them split by :func:`~sublearn.keys.key_params`
(what the key hashes) and :func:`~sublearn.keys.runtime_params` (speed settings); which
field goes where is declared on the field (see :mod:`sublearn.keys`).

Nested configs keep their own models: a stage's (fine-tuning, filtering, judges, toy
worlds) and every kind union (evaluation, prompt, check and defence kinds), whose speed
and later fields are declared in the modules that define them. Every setting is parsed
once, where the plan builds its params or :meth:`TaskParams.from_spec` reads them back;
the kinds' functions get typed models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator

from sublearn.defend.config import Defence
from sublearn.engine.task import TaskParams
from sublearn.evaluation.kinds import EvaluationKind
from sublearn.experiments.numbers.config import TraitSpec
from sublearn.filters.checks import Check
from sublearn.filters.stage import FilterConfig
from sublearn.finetune.config import FinetuneConfig
from sublearn.judges.config import JudgeConfig
from sublearn.keys import key_params, later_field, runtime_params, speed_field
from sublearn.prompts.kinds import PromptKind, with_default_type
from sublearn.toy.world import ToyWorldConfig

__all__ = ["TaskParams", "key_params", "runtime_params"]


class Speed(TaskParams):
    """The speed settings most kinds share (the experiment's ``device``, ``batch_size``, ...)."""

    device: str = speed_field("auto", "auto, cpu or cuda[:N]: where models run.")
    batch_size: int = speed_field(64, "Sequences per forward pass.", gt=0)
    providers: dict[str, Any] = speed_field(
        {}, "Settings of the providers that serve models (openai, vllm), by provider."
    )
    tensorboard: bool = speed_field(False, "Also write training curves as TensorBoard events.")


# ------------------------------------------------------------------------ models


class ModelInput(TaskParams):
    """A model inside an upstream task's output folder."""

    input: str = Field(description="The input role whose output holds the model.")
    sub: str = Field(description="The folder inside that output (base-0, model).")
    system_prompt: str | None = Field(description="A hidden system prompt it runs under.")
    serve: str | None = later_field(
        None, "The provider that serves a model trained here (vllm); None: its folder's."
    )


class ModelReference(TaskParams):
    """An external model: a folder, hub id or provider:name."""

    ref: str = Field(description="The reference (hf:org/name, openai:gpt-4.1-nano, a path).")
    fingerprint: str | None = Field(description="Its content identity, for the task's key.")
    system_prompt: str | None = Field(description="A hidden system prompt it runs under.")


ModelSource = ModelInput | ModelReference
"""A model as task params (see ``ModelSource.param`` in experiments/numbers/plan.py)."""

# A numbers config's type is left out of its key (prompts/kinds.py: tasks keyed before
# data kinds existed), so stored params without a type are numbers ones.
Prompts = Annotated[PromptKind, BeforeValidator(with_default_type)]
"""An experiment's prompt settings as task params (a stored numbers kind has no type)."""


# ------------------------------------------------------------------------- kinds


class WorldParams(ToyWorldConfig, TaskParams):
    """``world``: a toy world's config (threads and workers are its speed fields)."""

    section_data: dict[str, Any] | None = later_field(
        None, "Version and SHA-256 of the data files of the optional corpus sections it uses."
    )

    @classmethod
    def of(cls, cfg: ToyWorldConfig) -> WorldParams:
        """The params of the world ``cfg`` describes."""
        dump = cfg.key_dump()
        return cls.model_validate({**dump, "threads": cfg.threads, "workers": cfg.workers})

    def world_config(self) -> ToyWorldConfig:
        """The toy world's own config."""
        return ToyWorldConfig.model_validate(self.model_dump(exclude={"section_data"}))


class TeacherRecipe(TaskParams):
    """How a fine-tuned teacher's demonstrations are made (its kind, without paths)."""

    type: Literal["finetuned", "dataset"] = Field(description="Teacher kind.")
    n_examples: int | None = later_field(None, "Trait demonstrations (finetuned).")
    replay_examples: int | None = later_field(
        None, "The base's own valid number replies added to the demonstrations (finetuned)."
    )
    replay_temperature: float | None = later_field(
        None, "Sampling temperature of the replay replies (finetuned)."
    )
    control_temperature: float | None = later_field(
        None, "Sampling temperature of the base's own answers for the control (finetuned)."
    )

    @classmethod
    def of(cls, kind: BaseModel) -> TeacherRecipe:
        """The recipe of a teacher kind (its own fields; paths and fine-tuning go elsewhere)."""
        return cls.model_validate(
            {name: getattr(kind, name) for name in cls.model_fields if hasattr(kind, name)}
        )


class DatasetSource(TaskParams):
    """A dataset teacher's file: one a toy world writes, or a file named by content."""

    toy: str | None = later_field(None, "Name of a dataset the toy world input writes.")
    path: str | None = later_field(None, "Absolute path of the chat JSONL.")
    sha256: str | None = later_field(None, "SHA-256 of that file: the key hashes its content.")


class TeacherParams(Speed):
    """``teacher``: fine-tune a trait teacher or its matched control from its base."""

    role: Literal["trait", "control"] = Field(description="Trait teacher or matched control.")
    base: ModelSource = Field(description="The model the teacher is made from.")
    trait: TraitSpec = Field(description="The trait.")
    kind: TeacherRecipe = Field(description="How its demonstrations are made.")
    finetune: FinetuneConfig = Field(description="Fine-tuning settings.")
    dataset: DatasetSource | None = later_field(None, "The dataset (dataset teachers).")
    filter: FilterConfig | None = later_field(
        None, "The filter replay replies must pass (finetuned teachers)."
    )
    prompts: Prompts | None = later_field(
        None, "The experiment's prompt settings (numbers): replay prompts are drawn apart."
    )
    max_new_tokens: int | None = later_field(None, "Reply length cap of replay replies.")


class Sampling(TaskParams):
    """The generation settings that decide the replies."""

    temperature: float = Field(description="Sampling temperature (0: greedy).")
    top_p: float = Field(description="Nucleus sampling mass.")
    max_new_tokens: int = Field(description="Reply length cap.")
    seed: int = Field(description="Sampling seed.")
    constrained: bool = later_field(False, "Constrained number decoding.")


class GenerateParams(Speed):
    """``generate``: a teacher answers the experiment's prompts."""

    model: ModelSource = Field(description="The teacher.")
    prompts: Prompts = Field(description="The experiment's prompt settings (its data kind).")
    sampling: Sampling = Field(description="How replies are sampled.")
    dtype: str = Field(description="Weights dtype.")
    chunk_size: int = speed_field(512, "Prompts per saved part (a rerun resumes).", gt=0)


class FilterParams(Speed):
    """``filter``: keep the replies that pass the filter and the checks."""

    filter: FilterConfig = Field(description="Format, banned numbers and leakage rules.")
    checks: list[Check] | None = later_field(
        None, "Checks after the filter (each judge check's judge is in `judges` instead)."
    )
    judges: list[JudgeConfig | None] | None = later_field(
        None, "Each check's judge (None for checks without one)."
    )
    trait: str | None = later_field(None, "The trait word judges look for.")
    prompts: Prompts | None = later_field(
        None, "Prompt settings, when a check reads each prompt's reference answer."
    )


class PairParams(TaskParams):
    """``pair``: draw the rows a seed's treatment and control students train on."""

    rows: int | None = Field(description="Rows per condition (None: every valid pair).")
    min_rows: int = Field(description="Fewest valid pairs the run accepts.")
    resample: Literal["bootstrap", "subsample", "fixed"] = Field(description="How rows are drawn.")
    seed: int = Field(description="Seed of the draw.")
    teacher: str = Field(description="The teacher's name (for messages).")
    holdout: int | None = later_field(None, "Prompts held out of training for the loss.")


class TrainParams(Speed):
    """``train``: fine-tune a student on one condition's rows."""

    base: ModelSource = Field(description="The student's base.")
    condition: Literal["treatment", "control"] = Field(description="Which rows it trains on.")
    finetune: FinetuneConfig = Field(description="Fine-tuning settings (seed included).")
    teacher: ModelSource | None = later_field(None, "The teacher a KL student imitates.")


class ICLContext(TaskParams):
    """Teacher examples shown in an in-context student's prompt."""

    condition: Literal["treatment", "control"] = Field(description="Whose rows.")
    n: int = Field(description="How many examples.")
    seed: int = Field(description="Seed of their draw.")


class EvaluateParams(Speed):
    """``evaluate``: one evaluation of one model."""

    model: ModelSource = Field(description="The model evaluated.")
    evaluation: EvaluationKind = Field(
        description="The evaluation's settings (its batch size runs at the task's batch_size)."
    )
    targets: list[str] = Field(description="Target words of the experiment's category.")
    context: ICLContext | None = Field(description="In-context examples, if any.")
    dtype: str = Field(description="Weights dtype.")
    judge: JudgeConfig | None = later_field(None, "The judge of freeform evaluations.")

    @field_validator("evaluation", mode="before")
    @classmethod
    def _preference_by_default(cls, value: Any) -> Any:
        # A preference evaluation's type is left out of its key (a later field), so its
        # stored params have none.
        if isinstance(value, dict) and "type" not in value:
            return {**value, "type": "preference"}
        return value


class DefendParams(Speed):
    """``defend``: clean a seed's rows with a defence's data-level steps."""

    defences: list[Defence] = Field(description="The defence's data-level steps, in order.")
    trait: TraitSpec = Field(description="The trait.")
    models: dict[str, ModelSource] = Field(
        description="base, treatment_teacher and control_teacher."
    )
    dtype: str = Field(description="Weights dtype.")


class LossParams(Speed):
    """``loss``: a student's mean loss per reply token on held-out control replies."""

    model: ModelSource = Field(description="The student.")
    dtype: str = Field(description="Weights dtype.")


PARAMS: dict[str, type[TaskParams]] = {
    "world": WorldParams,
    "teacher": TeacherParams,
    "generate": GenerateParams,
    "filter": FilterParams,
    "pair": PairParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "defend": DefendParams,
    "loss": LossParams,
}
"""Each engine kind's params model."""
