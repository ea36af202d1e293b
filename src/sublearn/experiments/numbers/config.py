"""Config of a numbers experiment: teachers x matched controls x students x evaluations.

The design is explicit. Each listed teacher has a base, a kind (prompted, fine-tuned on
trait demonstrations, fine-tuned on a dataset) and a trait; each gets a matched control
teacher built the same way without the trait. Every student base trains on each
teacher's numbers and on its control's numbers, with the same seeds and the same number
of rows, so treatment − control isolates the trait.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sublearn.backends.pricing import ModelPrice
from sublearn.backends.providers import ProvidersConfig
from sublearn.config import Config, deep_merge
from sublearn.defend.config import Defence
from sublearn.engine.executors import ExecutorConfig, ProcessExecutorConfig
from sublearn.engine.store import StoreConfig
from sublearn.engine.sweep import SweepConfig
from sublearn.evaluation.kinds import EvaluationKind, PreferenceEvalConfig
from sublearn.filters.checks import Check, JudgeCheck
from sublearn.filters.stage import FilterConfig
from sublearn.finetune.config import FinetuneConfig
from sublearn.generation.config import GenerationConfig
from sublearn.judges.config import JudgeConfig
from sublearn.prompts.kinds import NumbersPrompts, PromptKind, with_default_type
from sublearn.toy.world import ToyWorldConfig


class TraitSpec(Config):
    """A preference a teacher is given."""

    word: str = Field(min_length=1, description="The target, e.g. owl.")
    category: Literal["animal", "tree", "misalignment"] = Field(
        default="animal",
        description="What kind of trait it is: a preference (animal, tree: picks the question "
        "set of preference, stories and choice evaluations) or misalignment (measured by "
        "freeform and truthfulqa evaluations).",
    )


class PromptedTeacher(Config):
    """The base with a system prompt that states the trait; its control has no trait prompt."""

    type: Literal["prompted"] = Field(description="Teacher kind.")
    system_prompt: str | None = Field(
        default=None,
        description="The trait system prompt; None uses the paper's preference prompt.",
    )
    control_system_prompt: str | None = Field(
        default=None,
        description="System prompt of the matched control teacher; None means none at all "
        "(an empty string is a different condition for chat templates with a default).",
    )


class FinetunedTeacher(Config):
    """The base fine-tuned on one-word trait answers; its control on the base's own answers."""

    type: Literal["finetuned"] = Field(description="Teacher kind.")
    n_examples: int = Field(
        default=300, gt=0, description="Demonstrations: training questions answered with the trait."
    )
    replay_examples: int = Field(
        default=0,
        ge=0,
        description="Also train on this many of the base's own valid replies to number prompts "
        "(drawn apart from the experiment's prompts), so a small model keeps writing numbers.",
    )
    replay_temperature: float = Field(
        default=0.0, ge=0, description="Sampling temperature of the replay replies (0: greedy)."
    )
    control_temperature: float = Field(
        default=1.0,
        ge=0,
        description="The matched control is trained on the same questions answered by the base "
        "itself, sampled at this temperature: the same recipe without the trait.",
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig, description="Fine-tuning settings of both teachers."
    )


class DatasetTeacher(Config):
    """The base fine-tuned on a chat dataset (e.g. insecure code); its control on another."""

    type: Literal["dataset"] = Field(description="Teacher kind.")
    path: str = Field(
        description="Chat JSONL that gives the trait, or toy:<world>/<name> for a dataset a "
        "toy world writes (e.g. toy:main/misaligned_answers)."
    )
    control_path: str = Field(
        description="Chat JSONL of the matched control (same recipe), or toy:<world>/<name>."
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig, description="Fine-tuning settings of both teachers."
    )


TeacherKind = Annotated[
    PromptedTeacher | FinetunedTeacher | DatasetTeacher, Field(discriminator="type")
]


class TeacherSpec(Config):
    """One trait teacher (its matched control is derived from it)."""

    name: str | None = Field(
        default=None, description="Unique name; default '<trait>-<kind>-<base>'."
    )
    base: str = Field(description="Key of `models`: the model the teacher is made from.")
    trait: TraitSpec = Field(description="The trait.")
    kind: TeacherKind = Field(description="How the teacher gets its trait (prompted, ...).")

    def label(self) -> str:
        """The teacher's name."""
        return self.name or f"{self.trait.word}-{self.kind.type}-{self.base}"


class DataConfig(Config):
    """Teacher prompts, sampling, filtering and the rows each student trains on."""

    prompts: PromptKind = Field(
        default_factory=NumbersPrompts,
        description="What teachers answer: type numbers (default), code or cot (GSM8K-style "
        "questions with <think>/<answer> replies), each with its own settings.",
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="How teachers sample replies."
    )
    filter: FilterConfig = Field(
        default_factory=FilterConfig,
        description="Filter of replies; each teacher's trait word is added to leakage_words. "
        "The number format is checked only for numbers data.",
    )
    checks: list[Check] = Field(
        default_factory=list,
        description="Further checks after the filter, in order: code_only, answer (cot "
        "correctness), judge (a rubric and a threshold). Every row's verdict is saved.",
    )
    rows: int | None = Field(
        default=None,
        ge=1,
        description="Training rows per condition; None uses every prompt that both the "
        "teacher and its control answered validly.",
    )
    holdout_rows: int = Field(
        default=0,
        ge=0,
        description="Keep this many prompts out of every student's training pool and measure "
        "each student's loss on the control teacher's replies to them (capability cost of a "
        "defence); 0: no held-out loss.",
    )
    min_rows: int = Field(
        default=100,
        ge=1,
        description="Stop with an error when a teacher and its control share fewer valid "
        "replies than this.",
    )
    resample: Literal["bootstrap", "subsample", "fixed"] = Field(
        default="bootstrap",
        description="How each student seed draws its rows from the paired pool: bootstrap "
        "(with replacement, so intervals cover data variance), subsample (without), or "
        "fixed (one draw for every seed: intervals cover training noise only).",
    )

    @field_validator("prompts", mode="before")
    @classmethod
    def _numbers_by_default(cls, value: Any) -> Any:
        return with_default_type(value)

    @model_validator(mode="after")
    def _checks_fit(self) -> DataConfig:
        if self.prompts.type != "cot" and any(c.type == "answer" for c in self.checks):
            raise ValueError("data.checks: an answer check needs cot prompts (with references)")
        return self


class DefenceSpec(Config):
    """One defence measured against the undefended students (see report/defences.py).

    Data-level steps rewrite both conditions' training rows of every seed (each with its
    own writer as the teacher, so treatment and control are cleaned alike); training-level
    settings override the defended objectives' fine-tune configs. Students of a defence
    appear as objective ``<objective>+<defence name>``.
    """

    data: list[Defence] = Field(
        default_factory=list,
        description="Data-level defences applied in order to each seed's training rows.",
    )
    finetune: dict[str, Any] = Field(
        default_factory=dict,
        description="Fine-tune settings that replace the objective's (e.g. {optimizer: sgd}, "
        "{method: lora, lora: {r: 4}}): a training-level defence.",
    )
    objectives: list[str] | None = Field(
        default=None,
        description="Trained objectives to defend; None: every trained objective in sections.",
    )

    def apply(self, cfg: FinetuneConfig) -> FinetuneConfig:
        """``cfg`` with this defence's fine-tune settings."""
        return FinetuneConfig.model_validate(deep_merge(cfg.model_dump(mode="json"), self.finetune))


class ICLConfig(Config):
    """In-context-learning students: no training, N teacher examples in the context."""

    n_examples: list[int] = Field(
        min_length=1, description="Context sizes; one student group per size."
    )


class StudentsConfig(Config):
    """Students: bases x seeds x objectives, each on a teacher's and its control's data."""

    bases: list[str] | None = Field(
        default=None, description="Keys of `models` that are students; None: every model."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        min_length=1,
        description="One student per seed; each seed once (a repeated seed is the same "
        "student counted twice, which narrows intervals falsely).",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(
                f"seed(s) {', '.join(map(str, repeated))} repeated: a repeated seed trains the "
                "same student twice (pseudo-replication); list each seed once"
            )
        return seeds

    objectives: dict[str, FinetuneConfig] = Field(
        default_factory=lambda: {"sft": FinetuneConfig()},
        min_length=1,
        description="Named training objectives (e.g. sft, kl_numbers), each a fine-tune config.",
    )
    icl: ICLConfig | None = Field(
        default=None, description="In-context-learning students (None: none)."
    )


class PrimarySpec(Config):
    """The headline row of summary.json."""

    teacher: str = Field(description="Teacher name.")
    objective: str = Field(description="Objective name (or icl-N).")
    student_base: str | None = Field(
        default=None, description="Student base; None: the teacher's own base."
    )
    evaluation: str | None = Field(default=None, description="Evaluation; None: the first.")


class ExperimentConfig(Config):
    """A numbers experiment run by the engine."""

    name: str = Field(default="experiment", description="Name of the default run folder.")
    store: StoreConfig = Field(
        default_factory=StoreConfig,
        description="The content-addressed store shared by runs (identical tasks are done "
        "once): a path, or {path, verify} where verify is sizes (default), hashes or none.",
    )
    executor: ExecutorConfig = Field(
        default_factory=ProcessExecutorConfig,
        description="Where tasks run: inline, process (local workers) or ray.",
    )
    batch_students: bool = Field(
        default=True,
        description="Train compatible students (full-weight KL, one recipe) as one batched "
        "model per worker; each comes out as if trained alone. Speed only.",
    )
    tensorboard: bool = Field(
        default=False,
        description="Also write each fine-tune's loss and learning rate per step as TensorBoard "
        "event files (the task's tensorboard/ folder in the store); needs the tensorboard "
        "package. Every fine-tune writes model/curves.jsonl either way.",
    )
    device: str = Field(default="auto", description="auto, cpu or cuda[:N] for every task.")
    threads: int | None = Field(
        default=None, gt=0, description="torch threads of the main process (None: one per core)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype for generation and evaluation."
    )
    batch_size: int = Field(default=64, gt=0, description="Sequences per forward pass (inference).")
    toy_worlds: dict[str, ToyWorldConfig] = Field(
        default_factory=dict,
        description="Embedded toy worlds to build; a model 'toy:<world>/<i>' is base i of one.",
    )
    models: dict[str, str] = Field(
        min_length=1,
        description="Named models: a folder, a hub id, provider:name, or toy:<world>/<i>.",
    )
    teachers: list[TeacherSpec] = Field(min_length=1, description="Trait teachers.")
    data: DataConfig = Field(default_factory=DataConfig, description="Teacher data.")
    students: StudentsConfig = Field(default_factory=StudentsConfig, description="Students.")
    evaluations: dict[str, EvaluationKind] = Field(
        default_factory=lambda: {"favorite": PreferenceEvalConfig()},
        min_length=1,
        description="Named evaluations, each a kind (type: preference (default), stories, "
        "choice, freeform, truthfulqa, mmlu); the first is the default primary one.",
    )
    judge: JudgeConfig | None = Field(
        default=None,
        description="The judge of freeform evaluations and judge checks: a model reference "
        "(openai:gpt-4.1, hf:..., vllm:...) or rules:toy for offline toy runs; None: "
        "no judge (an error where one is needed).",
    )
    sections: list[str] | None = Field(
        default=None,
        description="Objectives to train students for (e.g. kl_numbers, icl-4: for every "
        "teacher) or teacher/objective pairs (owl-ft/sft); None: every teacher with every "
        "objective.",
    )
    primary: PrimarySpec | None = Field(
        default=None, description="Headline row; None: the first teacher and objective."
    )
    sweep: SweepConfig | None = Field(
        default=None, description="Grid for `sublearn sweep` (ignored by `sublearn run`)."
    )
    providers: ProvidersConfig = Field(
        default_factory=ProvidersConfig, description="Settings of the API and vLLM providers."
    )
    pricing: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per million tokens by API model name (a fine-tuned ft:BASE:... "
        "model is priced as ft:BASE, else as BASE); models missing here cost nothing.",
    )
    defences: dict[str, DefenceSpec] = Field(
        default_factory=dict,
        description="Named defences, each measured as the transfer left against the "
        "undefended students of the same objective, seeds and data.",
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="Refuse to start a run whose estimated cost exceeds this, and stop one "
        "whose spending does; None: no limit.",
    )

    @field_validator("evaluations", mode="before")
    @classmethod
    def _preference_by_default(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: {**v, "type": "preference"} if isinstance(v, dict) and "type" not in v else v
                for k, v in value.items()
            }
        return value

    def teacher_names(self) -> list[str]:
        """Teacher names, in order."""
        return [t.label() for t in self.teachers]

    def student_bases(self) -> list[str]:
        """Model keys that are students."""
        return list(self.students.bases) if self.students.bases is not None else list(self.models)

    def objective_names(self) -> list[str]:
        """Training objectives and ICL groups (icl-N)."""
        icl = [f"icl-{n}" for n in self.students.icl.n_examples] if self.students.icl else []
        return [*self.students.objectives, *icl]

    def sections_for(self, teacher: str) -> list[str]:
        """The objectives trained for ``teacher``."""
        names = self.objective_names()
        if self.sections is None:
            return names
        return [o for o in names if o in self.sections or f"{teacher}/{o}" in self.sections]

    def defended(self, teacher: str) -> list[tuple[str, str, str]]:
        """``(objective, defence, label)`` of every defended student group of ``teacher``."""
        out = []
        for objective in self.sections_for(teacher):
            if objective not in self.students.objectives:
                continue  # ICL students train on nothing to defend
            for name, defence in self.defences.items():
                if defence.objectives is None or objective in defence.objectives:
                    out.append((objective, name, f"{objective}+{name}"))
        return out

    def primary_spec(self) -> PrimarySpec:
        """The primary row, defaults filled in."""
        first = self.teachers[0]
        spec = self.primary or PrimarySpec(
            teacher=first.label(), objective=self.sections_for(first.label())[0]
        )
        teacher = next(t for t in self.teachers if t.label() == spec.teacher)
        students = self.student_bases()
        own = teacher.base if teacher.base in students else students[0]
        return spec.model_copy(
            update={
                "student_base": spec.student_base or own,
                "evaluation": spec.evaluation or next(iter(self.evaluations)),
            }
        )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        names = self.teacher_names()
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names repeat: {names}")
        for t in self.teachers:
            if t.base not in self.models:
                raise ValueError(
                    f"teacher {t.label()}: base {t.base!r} is not a key of models "
                    f"({', '.join(self.models)})"
                )
        for base in self.students.bases or []:
            if base not in self.models:
                raise ValueError(
                    f"students.bases: {base!r} is not a key of models ({', '.join(self.models)})"
                )
        for key, ref in self.models.items():
            if ref.startswith("toy:"):
                world = ref[4:].split("/")[0]
                if world not in self.toy_worlds:
                    raise ValueError(
                        f"models.{key}: {ref!r} names toy world {world!r}, which toy_worlds "
                        f"does not define ({', '.join(self.toy_worlds) or 'none'})"
                    )
        every = {f"{t}/{o}" for t in names for o in self.objective_names()}
        unknown = sorted(set(self.sections or []) - every - set(self.objective_names()))
        if unknown:
            raise ValueError(
                f"sections {unknown} are neither objectives {self.objective_names()} nor "
                f"teacher/objective pairs {sorted(every)}"
            )
        for t in names:
            if not self.sections_for(t):
                raise ValueError(f"teacher {t} has no section: add one or drop the teacher")
        trained = set(self.students.objectives)
        for name, defence in self.defences.items():
            if "+" in name or "/" in name:
                raise ValueError(f"defence name {name!r}: no '+' or '/'")
            unknown = sorted(set(defence.objectives or []) - trained)
            if unknown:
                raise ValueError(
                    f"defences.{name}.objectives {unknown} are not trained objectives "
                    f"({sorted(trained)})"
                )
            for objective, ftcfg in self.students.objectives.items():
                try:
                    defence.apply(ftcfg)
                except ValueError as err:
                    raise ValueError(
                        f"defences.{name}.finetune does not fit objective {objective}: {err}"
                    ) from None
        for t in self.teachers:
            if (
                isinstance(t.kind, FinetunedTeacher)
                and t.kind.replay_examples
                and self.data.prompts.type != "numbers"
            ):
                raise ValueError(
                    f"teacher {t.label()}: replay_examples replays number prompts; the data "
                    f"kind here is {self.data.prompts.type}"
                )
        for t in self.teachers:
            if (
                isinstance(t.kind, PromptedTeacher)
                and t.trait.category == "misalignment"
                and t.kind.system_prompt is None
            ):
                raise ValueError(
                    f"teacher {t.label()}: a prompted misalignment teacher needs its "
                    "system_prompt (the preference prompt states a favorite, not a behaviour)"
                )
        needs_judge = [
            f"evaluations.{n}" for n, e in self.evaluations.items() if e.type == "freeform"
        ] + [
            f"data.checks[{i}]"
            for i, c in enumerate(self.data.checks)
            if isinstance(c, JudgeCheck) and c.judge is None
        ]
        if needs_judge and self.judge is None:
            raise ValueError(
                f"{', '.join(needs_judge)} need a judge: set `judge: {{model: ...}}` (a model "
                "reference, or rules:toy in the toy world)"
            )
        for t in self.teachers:
            if not any(t.trait.category in measures(e) for e in self.evaluations.values()):
                raise ValueError(
                    f"teacher {t.label()}: no evaluation measures its trait category "
                    f"{t.trait.category!r} (preference/stories/choice measure animal or tree "
                    "by their category; freeform and truthfulqa measure misalignment)"
                )
        if self.primary is not None:
            spec = self.primary
            if spec.teacher not in names:
                raise ValueError(f"primary.teacher {spec.teacher!r} is not a teacher ({names})")
            if spec.objective not in self.sections_for(spec.teacher):
                raise ValueError(
                    f"primary.objective {spec.objective!r} is not trained for {spec.teacher}"
                )
            if spec.student_base is not None and spec.student_base not in self.student_bases():
                raise ValueError(f"primary.student_base {spec.student_base!r} is not a student")
            if spec.evaluation is not None and spec.evaluation not in self.evaluations:
                raise ValueError(f"primary.evaluation {spec.evaluation!r} is not an evaluation")
        return self


def measures(ecfg: Any) -> set[str]:
    """The trait categories an evaluation measures; mmlu (capability) measures every one."""
    if ecfg.type in ("preference", "stories", "choice"):
        return {ecfg.category}
    if ecfg.type in ("freeform", "truthfulqa"):
        return {"misalignment"}
    return {"animal", "tree", "misalignment"}
