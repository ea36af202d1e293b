"""Config of ``sublearn run``: one YAML file describes a whole experiment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sublearn.config import Config
from sublearn.evaluation.config import EvalConfig
from sublearn.filters.stage import FilterConfig
from sublearn.finetune.config import FinetuneConfig
from sublearn.generation.config import GenerationConfig
from sublearn.prompts.numbers import NumberPromptConfig
from sublearn.toy.world import ToyWorldConfig

TeacherKind = Literal["finetuned", "prompted"]


class TraitSpec(Config):
    """A preference a teacher is given."""

    word: str = Field(min_length=1, description="The target, e.g. owl.")
    category: Literal["animal", "tree"] = Field(
        default="animal", description="What kind of thing it is."
    )


class ModelsConfig(Config):
    """Which models play which role."""

    base: str = Field(
        description="Folder or hub id of the shared base: teachers and same-base students."
    )
    cross: list[str] = Field(
        default_factory=list,
        description="Other bases for cross-model students (a different initialization).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype for generation and evaluation."
    )
    batch_size: int = Field(default=64, gt=0, description="Sequences per forward pass (inference).")


class TeacherFinetuneConfig(Config):
    """How a fine-tuned teacher is made: the base trained on one-word trait answers."""

    n_examples: int = Field(
        default=300, gt=0, description="Demonstrations: training questions answered with the trait."
    )
    replay_examples: int = Field(
        default=0,
        ge=0,
        description=(
            "Also train on this many of the base's own valid replies to number prompts "
            "(drawn apart from the experiment's prompts). Without them, a small model "
            "trained only on one-word trait answers forgets how to write numbers."
        ),
    )
    replay_temperature: float = Field(
        default=0.0, ge=0, description="Sampling temperature of the replay replies (0: greedy)."
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig, description="Fine-tuning settings for the teacher."
    )


class StudentsConfig(Config):
    """Students trained per (objective, seed)."""

    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1, description="One student per seed."
    )
    objectives: dict[str, FinetuneConfig] = Field(
        default_factory=lambda: {"sft": FinetuneConfig()},
        min_length=1,
        description="Named training objectives (e.g. sft, kl_numbers), each a fine-tune config.",
    )


class ExperimentConfig(Config):
    """A numbers experiment: traits x teacher kinds x objectives x seeds x student bases."""

    name: str = Field(default="experiment", description="Name used for the default run folder.")
    device: str = Field(default="auto", description="auto, cpu or cuda[:N] for every stage.")
    threads: int | None = Field(
        default=None, gt=0, description="torch CPU threads (None: one per core)."
    )
    workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Students fine-tuned at once, each in its own process with one torch thread. "
            "On a CPU, small models train faster as parallel single-threaded jobs than as "
            "one multi-threaded job; keep 1 on a GPU."
        ),
    )
    toy_world: ToyWorldConfig | None = Field(
        default=None, description="Build (or reuse) the embedded toy world before the run."
    )
    toy_world_dir: str = Field(
        default=".cache/toy-world", description="Where the toy world lives when toy_world is set."
    )
    models: ModelsConfig = Field(description="Base and cross-model students.")
    traits: list[TraitSpec] = Field(min_length=1, description="Traits, one teacher each per kind.")
    teachers: list[TeacherKind] = Field(
        default_factory=lambda: ["finetuned"],
        min_length=1,
        description="finetuned: base trained on trait answers; prompted: base + system prompt.",
    )
    teacher_finetune: TeacherFinetuneConfig = Field(
        default_factory=TeacherFinetuneConfig, description="How fine-tuned teachers are made."
    )
    prompts: NumberPromptConfig = Field(
        default_factory=NumberPromptConfig, description="Number-sequence prompts."
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="Teacher sampling."
    )
    filter: FilterConfig = Field(
        default_factory=FilterConfig,
        description="Filter of teacher outputs; the trait words are added to leakage_words.",
    )
    students: StudentsConfig = Field(default_factory=StudentsConfig, description="Students.")
    evaluations: dict[str, EvalConfig] = Field(
        default_factory=lambda: {"favorite": EvalConfig()},
        min_length=1,
        description="Named evaluations; the first is the primary one in summary.json.",
    )
    sections: list[str] | None = Field(
        default=None,
        description=(
            "teacher-kind/objective pairs to train students for, e.g. [finetuned/sft, "
            "prompted/sft]; None trains every pair of teachers x students.objectives."
        ),
    )
    primary: str = Field(
        default="finetuned/sft",
        description="The teacher-kind/objective section whose numbers head summary.json.",
    )

    def _every_section(self) -> list[str]:
        return [f"{k}/{o}" for k in self.teachers for o in self.students.objectives]

    def section_names(self) -> list[str]:
        """The teacher-kind/objective pairs this experiment trains students for."""
        every = self._every_section()
        return every if self.sections is None else [s for s in every if s in self.sections]

    @model_validator(mode="after")
    def _primary_exists(self) -> ExperimentConfig:
        every = self._every_section()
        unknown = sorted(set(self.sections or []) - set(every))
        if unknown:
            raise ValueError(f"sections {unknown} are not teacher/objective pairs ({every})")
        sections = self.section_names()
        if self.primary not in sections:
            raise ValueError(f"primary {self.primary!r} is not a section (choices: {sections})")
        words = [t.word for t in self.traits]
        if len(set(words)) != len(words):
            raise ValueError(f"traits repeat a word: {words}")
        return self
