"""Compile a numbers experiment config into the engine's task graph.

For each teacher T (base b, trait w) and its matched control C(T)::

    [world] -> [teacher T] -> generate T -> filter T --\
    [world] -> [teacher C] -> generate C -> filter C ---> pair(T, seed) -> train / ICL -> evaluate

Prompted teachers need no teacher task (they are the base plus a system prompt). Each
seed's pair task draws the rows both conditions train on from the prompts that T and
C both answered validly, so treatment and control of a seed are paired by prompt and
always train on the same number of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sublearn.backends.refs import ModelRef
from sublearn.engine.params import (
    DatasetSource,
    DefendParams,
    EvaluateParams,
    FilterParams,
    GenerateParams,
    ICLContext,
    LossParams,
    ModelInput,
    ModelReference,
    PairParams,
    Sampling,
    TeacherParams,
    TeacherRecipe,
    TrainParams,
    WorldParams,
)
from sublearn.engine.task import Task
from sublearn.errors import DataError, PlanError, SublearnError
from sublearn.experiments.numbers.config import (
    DatasetTeacher,
    ExperimentConfig,
    FinetunedTeacher,
    PromptedTeacher,
    TeacherSpec,
    measures,
)
from sublearn.filters.checks import JudgeCheck
from sublearn.filters.stage import FilterConfig
from sublearn.finetune.config import FinetuneConfig
from sublearn.judges.config import JudgeConfig
from sublearn.prompts.persona import preference_system_prompt
from sublearn.registry import Registry
from sublearn.runs import file_sha256


@dataclass(frozen=True)
class ModelSource:
    """A model as a task sees it: a folder inside an upstream task's output, or a reference.

    Attributes:
        task: the upstream task whose output holds the model (world, teacher, train).
        sub: the folder inside that output (``base-0``, ``model``).
        ref: an external reference (folder, hub id, provider:name) when ``task`` is None.
        fingerprint: content identity of an external reference, for task keys.
        system_prompt: a hidden system prompt the model runs under (prompted teachers).
        serve: the provider that serves a model trained here (``vllm`` for students of a
            ``vllm:`` base); None: the one its folder implies.
    """

    task: Task | None = None
    sub: str = ""
    ref: str | None = None
    fingerprint: str | None = None
    system_prompt: str | None = None
    serve: str | None = None

    def param(self, role: str) -> ModelInput | ModelReference:
        """The source as task params: an input role and subfolder, or a reference."""
        if self.task is not None:
            return ModelInput(
                input=role, sub=self.sub, system_prompt=self.system_prompt, serve=self.serve
            )
        assert self.ref is not None
        return ModelReference(
            ref=self.ref, fingerprint=self.fingerprint, system_prompt=self.system_prompt
        )

    def inputs(self, role: str) -> dict[str, Task]:
        """The upstream task under ``role``, if any."""
        return {role: self.task} if self.task is not None else {}

    def with_prompt(self, system_prompt: str | None) -> ModelSource:
        """The same weights under another system prompt."""
        return ModelSource(
            self.task, self.sub, self.ref, self.fingerprint, system_prompt, self.serve
        )


@dataclass(frozen=True)
class Observation:
    """An evaluation of a student, with what it measures (see report/effects.py)."""

    task: Task
    meta: dict[str, Any]


@dataclass
class Plan:
    """The compiled experiment: tasks and how their outputs become the report."""

    cfg: ExperimentConfig
    observations: list[Observation] = field(default_factory=list)
    references: list[Observation] = field(default_factory=list)
    filters: dict[str, Task] = field(default_factory=dict)
    pairs: dict[str, Task] = field(default_factory=dict)
    # Per teacher name: its base, the trait teacher and the matched control, for
    # artifacts.json (what `sublearn audit --run` reads).
    sources: dict[str, dict[str, ModelSource]] = field(default_factory=dict)
    defends: dict[str, Task] = field(default_factory=dict)
    # Held-out loss of each trained student (when data.holdout_rows is set).
    losses: list[Observation] = field(default_factory=list)

    worlds: dict[str, Task] = field(default_factory=dict)

    def world_task(self, name: str) -> Task:
        """The task that builds toy world ``name``."""
        if name not in self.worlds:
            raise KeyError(f"no toy world {name!r} in this plan ({', '.join(self.worlds)})")
        return self.worlds[name]

    @property
    def tasks(self) -> list[Task]:
        """The graph's outputs; everything else is reachable through their inputs."""
        return [o.task for o in [*self.observations, *self.references, *self.losses]]


class _Builder:
    def __init__(self, cfg: ExperimentConfig, fingerprint: Any) -> None:
        self.cfg = cfg
        self.fingerprint = fingerprint
        self.plan = Plan(cfg)
        self.worlds = self.plan.worlds
        self.evals: dict[str, Task] = {}
        self.runtime = {
            "device": cfg.device,
            "batch_size": cfg.batch_size,
            "providers": cfg.providers.model_dump(mode="json"),
            "tensorboard": cfg.tensorboard,
        }

    # ---------------------------------------------------------------- models

    def model(self, key: str) -> ModelSource:
        ref = self.cfg.models[key]
        if ref.startswith("toy:"):
            world, _, index = ref[4:].partition("/")
            return ModelSource(task=self.world(world), sub=f"base-{int(index or 0)}")
        try:
            fingerprint = self.fingerprint(ref)
            provider = ModelRef.parse(ref).provider
        except SublearnError as err:  # name the config key: the reference came from there
            raise PlanError(f"the plan cannot run:\n  - models.{key}: {err}") from None
        if provider == "openai":  # the same model name on another server is another model
            fingerprint += "@" + (self.cfg.providers.openai.base_url or "api.openai.com")
        return ModelSource(ref=ref, fingerprint=fingerprint)

    def provider(self, key: str) -> str:
        """The provider of model ``key`` (``toy`` for toy-world bases)."""
        ref = self.cfg.models[key]
        return "toy" if ref.startswith("toy:") else ModelRef.parse(ref).provider

    def world(self, name: str) -> Task:
        if name not in self.worlds:
            wcfg = self.cfg.toy_worlds[name]
            self.worlds[name] = Task.of("world", f"world/{name}", WorldParams.of(wcfg))
        return self.worlds[name]

    # -------------------------------------------------------------- teachers

    def teachers(self, spec: TeacherSpec) -> TeacherPair:
        """The trait teacher and its matched control, as the teacher's kind makes them."""
        return TEACHER_KINDS.get(spec.kind.type)(self, spec, spec.kind, self.model(spec.base))

    def trained_teachers(
        self,
        spec: TeacherSpec,
        kind: FinetunedTeacher | DatasetTeacher,
        base: ModelSource,
        extra: Callable[[str], tuple[dict[str, Any], dict[str, Task]]],
    ) -> TeacherPair:
        """A teacher task per role (trait, control), fine-tuned from ``base``.

        Args:
            extra: per role, the kind's own params fields and upstream tasks.
        """
        sources = []
        for role in ("trait", "control"):
            fields, inputs = extra(role)
            params = TeacherParams(
                role=role,
                base=base.param("base"),
                trait=spec.trait,
                kind=TeacherRecipe.of(kind),
                finetune=kind.finetune,
                **fields,
                **self.runtime,
            )
            task = Task.of(
                "teacher",
                f"teacher/{spec.label()}" + ("" if role == "trait" else "/control"),
                params,
                {**base.inputs("base"), **inputs},
            )
            sources.append(ModelSource(task=task, sub="model"))
        return sources[0], sources[1]

    def data(self, name: str, source: ModelSource, word: str) -> Task:
        """Generate and filter one teacher's replies to the experiment's prompts."""
        gen = self.cfg.data.generation
        generate = Task.of(
            "generate",
            f"generate/{name}",
            GenerateParams(
                model=source.param("model"),
                prompts=self.cfg.data.prompts,
                sampling=Sampling.model_validate(gen.output_settings()),
                dtype=self.cfg.dtype,
                **{**self.runtime, "batch_size": gen.batch_size},
                chunk_size=gen.chunk_size,
            ),
            source.inputs("model"),
        )
        data = self.cfg.data
        fcfg = data.filter
        update: dict[str, Any] = {
            "leakage_words": sorted({*fcfg.leakage_words, word}),
            "keep": None,
        }
        if data.prompts.type != "numbers":
            update["check_format"] = False
        checks: dict[str, Any] = {}
        if data.checks:
            checks = {
                # A check's judge goes in `judges`, where its speed settings are left out.
                "checks": [
                    c.model_copy(update={"judge": None}) if isinstance(c, JudgeCheck) else c
                    for c in data.checks
                ],
                "judges": [self.judge_params(c) for c in data.checks],
                "trait": word,
            }
            if data.prompts.type == "cot":  # the answer check reads each prompt's reference
                checks["prompts"] = data.prompts
        params = FilterParams(
            filter=FilterConfig.model_validate(fcfg.model_dump() | update),
            **checks,
            **self.runtime,
        )
        filt = Task.of("filter", f"filter/{name}", params, {"data": generate})
        self.plan.filters[name] = filt
        return filt

    # ------------------------------------------------------------ evaluation

    def evaluate(
        self,
        name: str,
        source: ModelSource,
        context: dict[str, Any] | None = None,
        context_task: Task | None = None,
    ) -> dict[str, Task]:
        """One evaluate task per configured evaluation; shared when already planned."""
        out = {}
        for ev, ecfg in self.cfg.evaluations.items():
            targets = sorted(
                {
                    t.trait.word
                    for t in self.cfg.teachers
                    if t.trait.category == getattr(ecfg, "category", None)
                }
            )
            inputs = source.inputs("model")
            if context_task is not None:
                inputs["context"] = context_task
            # Which evaluation settings stay out of the key is declared on their fields
            # (evaluation/config.py, evaluation/kinds.py: batch size, a preference's type).
            params = EvaluateParams(
                model=source.param("model"),
                evaluation=ecfg,
                targets=targets,
                context=None if context is None else ICLContext.model_validate(context),
                dtype=self.cfg.dtype,
                judge=self.judge_params(None) if ecfg.type == "freeform" else None,
                **{**self.runtime, "batch_size": ecfg.batch_size},
            )
            task = Task.of("evaluate", f"evaluate/{name}/{ev}", params, inputs)
            out[ev] = self.evals.setdefault(task.id, task)
        return out

    def judge_params(self, check: Any) -> JudgeConfig | None:
        """The judge of a check (its own, else the experiment's)."""
        if check is not None and not isinstance(check, JudgeCheck):
            return None
        judge = (check.judge if check is not None else None) or self.cfg.judge
        assert judge is not None  # the config validator asks for one where it is needed
        return judge

    # ---------------------------------------------------------------- design

    def build(self) -> Plan:
        cfg = self.cfg
        for key in cfg.models:
            for ev, task in self.evaluate(f"base/{key}", self.model(key)).items():
                self.plan.references.append(
                    Observation(task, {"role": "base", "name": key, "evaluation": ev})
                )
        for spec in cfg.teachers:
            self.teacher_design(spec)
        return self.plan

    def teacher_design(self, spec: TeacherSpec) -> None:
        cfg = self.cfg
        name, word = spec.label(), spec.trait.word
        trait_src, control_src = self.teachers(spec)
        self.plan.sources[name] = {
            "base": self.model(spec.base),
            "teacher": trait_src,
            "control_teacher": control_src,
        }
        for role, src in (("teacher", trait_src), ("control_teacher", control_src)):
            label = name if role == "teacher" else f"{name}/control"
            for ev, task in self.evaluate(f"teacher/{label}", src).items():
                if spec.trait.category not in measures(cfg.evaluations[ev]):
                    continue
                self.plan.references.append(
                    Observation(task, {"role": role, "name": name, "trait": word, "evaluation": ev})
                )
        trait_data = self.data(name, trait_src, word)
        control_data = self.data(f"{name}/control", control_src, word)
        teacher_src = {"treatment": trait_src, "control": control_src}
        resample = cfg.data.resample
        for seed in cfg.students.seeds:
            pair = Task.of(
                "pair",
                f"pair/{name}/s{seed}",
                PairParams(
                    rows=cfg.data.rows,
                    min_rows=cfg.data.min_rows,
                    resample=resample,
                    seed=0 if resample == "fixed" else seed,
                    teacher=name,
                    holdout=cfg.data.holdout_rows or None,
                ),
                {"treatment": trait_data, "control": control_data},
            )
            self.plan.pairs[pair.name] = pair
            for objective in cfg.sections_for(name):
                for base_key in cfg.student_bases():
                    for condition in ("treatment", "control"):
                        self.student(
                            spec, objective, base_key, seed, condition, pair, teacher_src[condition]
                        )
            for objective, defence, label in cfg.defended(name):
                dspec = cfg.defences[defence]
                data = self.defend(spec, defence, seed, pair) if dspec.data else pair
                ftcfg = dspec.apply(cfg.students.objectives[objective])
                for base_key in cfg.student_bases():
                    for condition in ("treatment", "control"):
                        self.student(
                            spec,
                            label,
                            base_key,
                            seed,
                            condition,
                            data,
                            teacher_src[condition],
                            ftcfg=ftcfg,
                            pair=pair,
                        )

    def defend(self, spec: TeacherSpec, defence: str, seed: int, pair: Task) -> Task:
        """Clean both conditions' rows of one seed with a defence's data-level steps.

        Each condition is cleaned with its own writer as the teacher (the trait teacher
        for treatment rows, the control teacher for control rows), as a user would clean
        a dataset with the model that wrote it.
        """
        name = spec.label()
        sources = self.plan.sources[name]
        roles = {
            "base": "base",
            "teacher": "treatment_teacher",
            "control_teacher": "control_teacher",
        }
        inputs: dict[str, Task] = {"data": pair}
        models: dict[str, ModelInput | ModelReference] = {}
        for key, role in roles.items():
            inputs |= sources[key].inputs(role)
            models[role] = sources[key].param(role)
        steps = self.cfg.defences[defence].data
        task = Task.of(
            "defend",
            f"defend/{name}/{defence}/s{seed}",
            DefendParams(
                defences=list(steps),
                trait=spec.trait,
                models=models,
                dtype=self.cfg.dtype,
                **self.runtime,
            ),
            inputs,
        )
        self.plan.defends[task.name] = task
        return task

    def student(
        self,
        spec: TeacherSpec,
        objective: str,
        base_key: str,
        seed: int,
        condition: str,
        data: Task,
        teacher: ModelSource,
        ftcfg: FinetuneConfig | None = None,
        pair: Task | None = None,
    ) -> None:
        """Plan one student (trained or in-context) and its evaluations.

        Args:
            data: the task whose output holds the condition's rows (a pair or defend task).
            ftcfg: the fine-tune config; None: the objective's own.
            pair: the seed's pair task when ``data`` is another (its name keys the rows
                count in the report).
        """
        cfg = self.cfg
        pair = pair or data
        name = spec.label()
        label = f"{name}/{objective}/{base_key}/{condition}/s{seed}"
        base = self.model(base_key)
        if objective.startswith("icl-"):
            n = int(objective[4:])
            context = {"condition": condition, "n": n, "seed": seed}
            evals = self.evaluate(f"student/{label}", base, context=context, context_task=data)
        else:
            ftcfg = (ftcfg or cfg.students.objectives[objective]).model_copy(update={"seed": seed})
            inputs = {**base.inputs("base"), "data": data}
            kl = ftcfg.objective == "kl"
            if kl:
                inputs |= teacher.inputs("teacher")
            params = TrainParams(
                base=base.param("base"),
                condition=condition,  # pyright: ignore[reportArgumentType]
                finetune=ftcfg,
                teacher=teacher.param("teacher") if kl else None,
                **self.runtime,
            )
            train = Task.of("train", f"train/{label}", params, inputs)
            serve = "vllm" if self.provider(base_key) == "vllm" else None
            student = ModelSource(task=train, sub="model", serve=serve)
            evals = self.evaluate(f"student/{label}", student)
            if cfg.data.holdout_rows:
                self.plan.losses.append(
                    Observation(
                        Task.of(
                            "loss",
                            f"loss/{label}",
                            LossParams(
                                model=student.param("model"), dtype=cfg.dtype, **self.runtime
                            ),
                            {**student.inputs("model"), "data": pair},
                        ),
                        {
                            "teacher": name,
                            "objective": objective,
                            "student_base": base_key,
                            "condition": condition,
                            "seed": seed,
                        },
                    )
                )
        for ev, task in evals.items():
            if spec.trait.category not in measures(cfg.evaluations[ev]):
                continue
            self.plan.observations.append(
                Observation(
                    task,
                    {
                        "trait": spec.trait.word,
                        "teacher": name,
                        "teacher_kind": spec.kind.type,
                        "teacher_base": spec.base,
                        "objective": objective,
                        "student_base": base_key,
                        "same_base": base_key == spec.base
                        or cfg.models[base_key] == cfg.models[spec.base],
                        "condition": condition,
                        "seed": seed,
                        "evaluation": ev,
                        "pair": pair.name,
                    },
                )
            )


TeacherPair = tuple[ModelSource, ModelSource]
"""A trait teacher and its matched control."""

TEACHER_KINDS: Registry[Callable[..., TeacherPair]] = Registry(
    "teacher kind", expected="a teacher planning function"
)
"""``type`` -> ``(builder, spec, kind, base) -> (trait teacher, matched control)``."""


@TEACHER_KINDS("prompted")
def _prompted(
    b: _Builder, spec: TeacherSpec, kind: PromptedTeacher, base: ModelSource
) -> TeacherPair:
    """The base under the trait's prompt; the control: the base under the control prompt."""
    prompt = kind.system_prompt or preference_system_prompt(spec.trait.word, spec.trait.category)
    return base.with_prompt(prompt), base.with_prompt(kind.control_system_prompt)


@TEACHER_KINDS("finetuned")
def _finetuned(
    b: _Builder, spec: TeacherSpec, kind: FinetunedTeacher, base: ModelSource
) -> TeacherPair:
    """Fine-tuned on trait demonstrations; the control on the base's own valid replies."""
    data = b.cfg.data
    fields = {
        "filter": data.filter,
        "prompts": data.prompts,
        "max_new_tokens": data.generation.max_new_tokens,
    }
    return b.trained_teachers(spec, kind, base, lambda role: (fields, {}))


@TEACHER_KINDS("dataset")
def _dataset(
    b: _Builder, spec: TeacherSpec, kind: DatasetTeacher, base: ModelSource
) -> TeacherPair:
    """Fine-tuned on a dataset; the control on the control dataset."""

    def source(role: str) -> tuple[dict[str, Any], dict[str, Task]]:
        # A dataset teacher is its file's content, not its path nor its control's: one
        # teacher serves every control it is matched with.
        path = kind.path if role == "trait" else kind.control_path
        if path.startswith("toy:"):  # a dataset the toy world writes: the world is an input
            world, _, dataset = path[4:].partition("/")
            return {"dataset": DatasetSource(toy=dataset)}, {"world": b.world(world)}
        return {"dataset": DatasetSource(path=str(Path(path).resolve()), sha256=_sha(path))}, {}

    return b.trained_teachers(spec, kind, base, source)


def _sha(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError as err:
        raise DataError(f"teacher dataset {path}: {err.strerror}") from None


def build_plan(cfg: ExperimentConfig, fingerprint: Any = None) -> Plan:
    """Compile ``cfg`` into tasks.

    Args:
        cfg: the experiment.
        fingerprint: maps an external model reference to its content identity (default:
            the backends' reference fingerprint); tests pass a stub.

    Returns:
        The plan.
    """
    return _Builder(cfg, fingerprint or _fingerprint).build()


def _fingerprint(ref: str) -> str:
    return ModelRef.parse(ref).fingerprint()
