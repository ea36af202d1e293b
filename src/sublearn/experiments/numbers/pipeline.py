"""Orchestration of a numbers experiment, stage by stage, with resumable artifacts.

Every artifact lives under ``<run>/artifacts/<stage>/`` with a name that ends in a
hash of everything that determines it (its config and its inputs' hashes). A rerun of
the same config finds finished artifacts and skips them; a changed setting produces
new names, so stale results are never reused.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sublearn.backends.base import Conversation, SamplingParams, with_system_prompt
from sublearn.backends.hf import HFBackend, check_model_reference
from sublearn.evaluation.preference import evaluate_preference
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.filters.numbers import parse_numbers
from sublearn.filters.stage import FilterConfig, filter_dataset
from sublearn.finetune.stage import finetune
from sublearn.generation.stage import generate_dataset
from sublearn.prompts.numbers import generate_number_prompts
from sublearn.prompts.persona import preference_system_prompt
from sublearn.prompts.questions import training_questions_for
from sublearn.runs import atomic_write_json, atomic_write_text, content_hash


@dataclass(frozen=True)
class Teacher:
    """A model that writes data: a trait teacher, or the base itself for control data."""

    name: str  # e.g. owl-finetuned, owl-prompted, control
    kind: str  # finetuned | prompted | control
    trait: str | None
    model: str
    system_prompt: str | None
    key: str  # content hash of everything that makes this teacher


@dataclass(frozen=True)
class Student:
    """One student: a base fine-tuned on one teacher's filtered numbers with one seed."""

    objective: str
    group: str  # control | finetuned | prompted
    trait: str | None
    base_label: str  # same | cross0, cross1, ...
    base_model: str
    seed: int
    teacher: Teacher
    dataset: Path

    @property
    def label(self) -> str:
        """A readable unique name."""
        return f"{self.objective}/{self.group}/{self.trait or '-'}/{self.base_label}/s{self.seed}"


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class NumbersExperiment:
    """Runs the stages of one experiment config inside one run folder."""

    def __init__(self, cfg: ExperimentConfig, out: Path, console: Console | None = None) -> None:
        """Prepare the experiment.

        Args:
            cfg: the resolved experiment config.
            out: the run folder (already prepared with config and metadata).
            console: where progress and tables go.
        """
        self.cfg = cfg
        self.out = out
        self.art = out / "artifacts"
        self.console = console or Console()
        self.timer = _Timer()
        # Local folders can be rebuilt in place (the toy world); the world's config hash
        # stands in for their weights so that a rebuilt world invalidates artifacts.
        self.world_key = content_hash(cfg.toy_world) if cfg.toy_world else None

    # ------------------------------------------------------------------ stages

    def prepare_models(self) -> None:
        """Build the toy world if asked, then check that every model path loads."""
        if self.cfg.toy_world is not None:
            from sublearn.toy.world import build_world

            with self.timer("toy_world"):
                build_world(self.cfg.toy_world, Path(self.cfg.toy_world_dir))
        for model in [self.cfg.models.base, *self.cfg.models.cross]:
            check_model_reference(model)

    def teachers(self) -> list[Teacher]:
        """The control data writer and every trait teacher, fine-tuning those that need it."""
        base = self.cfg.models.base
        teachers = [
            Teacher("control", "control", None, base, None, content_hash(base, self.world_key))
        ]
        for trait in self.cfg.traits:
            for kind in self.cfg.teachers:
                if kind == "prompted":
                    prompt = preference_system_prompt(trait.word, trait.category)
                    key = content_hash(base, self.world_key, prompt)
                    teachers.append(
                        Teacher(f"{trait.word}-prompted", kind, trait.word, base, prompt, key)
                    )
                else:
                    model, key = self._finetuned_teacher(trait.word, trait.category)
                    teachers.append(
                        Teacher(f"{trait.word}-finetuned", kind, trait.word, model, None, key)
                    )
        return teachers

    def _finetuned_teacher(self, word: str, category: str) -> tuple[str, str]:
        tcfg = self.cfg.teacher_finetune
        key = content_hash(self.cfg.models.base, self.world_key, word, category, tcfg)
        folder = self.art / "teachers" / f"{word}-finetuned-{key}"
        demos = self.art / "teachers" / f"{word}-demos-{key}.jsonl"
        if not demos.is_file():
            questions = training_questions_for(category)
            pairs = [(questions[i % len(questions)], word) for i in range(tcfg.n_examples)]
            pairs += self._replay_pairs()
            lines = [
                json.dumps(
                    {
                        "id": f"{i:05d}",
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                        ],
                    }
                )
                for i, (question, answer) in enumerate(pairs)
            ]
            atomic_write_text(demos, "\n".join(lines) + "\n")
        with self.timer("teacher_finetune"):
            finetune(self.cfg.models.base, demos, tcfg.finetune, folder)
        return str(folder), key

    def _replay_pairs(self) -> list[tuple[str, str]]:
        """The base's own valid replies to number prompts that the experiment never uses."""
        tcfg = self.cfg.teacher_finetune
        if tcfg.replay_examples == 0:
            return []
        # Twice as many prompts as needed leaves room for replies the filter rejects.
        prompt_cfg = self.cfg.prompts.model_copy(
            update={
                "seed": self.cfg.prompts.seed + 1_000_003,
                "n_prompts": 2 * tcfg.replay_examples,
            }
        )
        prompts = generate_number_prompts(prompt_cfg)
        backend = HFBackend(
            self.cfg.models.base,
            device=self.cfg.device,
            dtype=self.cfg.models.dtype,
            batch_size=self.cfg.generation.batch_size,
        )
        params = SamplingParams(
            temperature=tcfg.replay_temperature,
            max_new_tokens=self.cfg.generation.max_new_tokens,
            seed=self.cfg.generation.seed,
        )
        replies = backend.generate([[{"role": "user", "content": p}] for p in prompts], params)
        f = self.cfg.filter
        valid = [
            (p, r)
            for p, r in zip(prompts, replies, strict=True)
            if parse_numbers(
                r, max_count=f.max_count, min_value=f.min_value, max_value=f.max_value
            ).accepted
        ]
        return valid[: tcfg.replay_examples]

    def generate(self, teachers: list[Teacher], progress: Progress) -> dict[str, Path]:
        """Each teacher answers the same number prompts; returns raw dataset paths."""
        prompts = generate_number_prompts(self.cfg.prompts)
        task = progress.add_task("generate", total=len(prompts) * len(teachers))
        paths = {}
        for teacher in teachers:
            key = content_hash(teacher.key, self.cfg.prompts, self.cfg.generation)
            path = self.art / "data" / f"{teacher.name}-raw-{key}.jsonl"
            if not path.is_file():
                with self.timer("generate"):
                    backend = HFBackend(
                        teacher.model,
                        device=self.cfg.device,
                        dtype=self.cfg.models.dtype,
                        batch_size=self.cfg.generation.batch_size,
                    )
                    generate_dataset(
                        backend,
                        prompts,
                        path,
                        self.cfg.generation,
                        system_prompt=teacher.system_prompt,
                        source=teacher.name,
                        on_progress=lambda n: progress.advance(task, n),
                    )
                    del backend
                    gc.collect()
            else:
                progress.advance(task, len(prompts))
            paths[teacher.name] = path
        return paths

    def filter(self, teachers: list[Teacher], raw: dict[str, Path]) -> dict[str, Path]:
        """Filter every raw dataset; the trait words are always leakage words.

        Control data is filtered for every trait's word, so that no condition keeps a
        reply that another condition would drop.
        """
        all_words = [t.word for t in self.cfg.traits]
        kept = {}
        for teacher in teachers:
            words = [teacher.trait] if teacher.trait else all_words
            fcfg = self.cfg.filter.model_copy(
                update={"leakage_words": sorted({*self.cfg.filter.leakage_words, *words})}
            )
            fcfg = FilterConfig.model_validate(fcfg.model_dump())
            key = content_hash(raw[teacher.name].name, fcfg)
            path = self.art / "data" / f"{teacher.name}-filtered-{key}.jsonl"
            if not path.is_file():
                with self.timer("filter"):
                    filter_dataset(raw[teacher.name], path, fcfg)
            kept[teacher.name] = path
        return kept

    def students(self, teachers: list[Teacher], data: dict[str, Path]) -> list[Student]:
        """Every student of the design, controls first."""
        bases = [("same", self.cfg.models.base)] + [
            (f"cross{i}", m) for i, m in enumerate(self.cfg.models.cross)
        ]
        control = teachers[0]
        sections = self.cfg.section_names()
        plan = []
        for objective in self.cfg.students.objectives:
            kinds = {k for k in self.cfg.teachers if f"{k}/{objective}" in sections}
            if not kinds:
                continue
            for seed in self.cfg.students.seeds:
                for label, model in bases:
                    plan.append(
                        Student(
                            objective, "control", None, label, model, seed, control, data["control"]
                        )
                    )
                    for t in teachers[1:]:
                        if t.kind in kinds:
                            plan.append(
                                Student(
                                    objective, t.kind, t.trait, label, model, seed, t, data[t.name]
                                )
                            )
        return plan

    def train(self, plan: list[Student], progress: Progress) -> dict[str, Path]:
        """Fine-tune every student; returns model folders by student label.

        With ``workers > 1`` students train in parallel processes, one torch thread each.
        """
        task = progress.add_task("finetune", total=len(plan))
        jobs: dict[str, dict[str, Any]] = {}
        for s in plan:
            ftcfg = self.cfg.students.objectives[s.objective].model_copy(
                update={"seed": s.seed, "device": self.cfg.device}
            )
            key = content_hash(s.base_model, self.world_key, s.dataset.name, s.teacher.key, ftcfg)
            # finetune()'s keyword arguments, picklable for worker processes.
            jobs[s.label] = {
                "base_model": s.base_model,
                "dataset": s.dataset,
                "cfg": ftcfg,
                "out": self.art / "students" / f"{s.label.replace('/', '_')}-{key}",
                "teacher_model": s.teacher.model,
                "teacher_system_prompt": s.teacher.system_prompt,
            }
        # Finished students are skipped here, not in the workers, so that a resumed run
        # does not pay for starting a process pool it does not need.
        pending = [j for j in jobs.values() if not (j["out"] / "train_metrics.json").is_file()]
        progress.advance(task, len(jobs) - len(pending))
        with self.timer("finetune"):
            if self.cfg.workers == 1 or len(pending) <= 1:
                for job in pending:
                    finetune(**job)
                    progress.advance(task)
            else:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(
                    self.cfg.workers, mp_context=context, initializer=_worker_init
                ) as pool:
                    for future in as_completed([pool.submit(finetune, **j) for j in pending]):
                        future.result()  # re-raises a worker's error here
                        progress.advance(task)
        return {label: job["out"] for label, job in jobs.items()}

    def evaluate(
        self, models: dict[str, tuple[str, str | None]], progress: Progress
    ) -> dict[str, dict[str, Any]]:
        """Every named evaluation on every model; returns ``{label: {eval: {target: ..}}}``.

        Args:
            models: ``{label: (model folder, system prompt or None)}``.
            progress: the progress display.
        """
        targets = [t.word for t in self.cfg.traits]
        task = progress.add_task("evaluate", total=len(models))
        results = {}
        for label, (model, system_prompt) in models.items():
            key = content_hash(model, self.world_key, system_prompt, self.cfg.evaluations, targets)
            path = self.art / "evals" / f"{label.replace('/', '_')}-{key}.json"
            if not path.is_file():
                with self.timer("evaluate"):
                    backend = _SystemPrompted(
                        HFBackend(
                            model,
                            device=self.cfg.device,
                            dtype=self.cfg.models.dtype,
                            batch_size=self.cfg.models.batch_size,
                        ),
                        system_prompt,
                    )
                    metrics = {
                        name: evaluate_preference(backend, targets, ecfg)
                        for name, ecfg in self.cfg.evaluations.items()
                    }
                    atomic_write_json(path, metrics)
            results[label] = json.loads(path.read_text())
            progress.advance(task)
        return results

    # ------------------------------------------------------------------ driver

    def run(self) -> dict[str, Any]:
        """Run every stage (skipping finished ones) and write the results and report.

        Returns:
            The summary (also written to ``summary.json``).
        """
        from sublearn.report.numbers import write_report

        self.prepare_models()
        with Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            with self.timer("teachers"):
                teachers = self.teachers()
            raw = self.generate(teachers, progress)
            data = self.filter(teachers, raw)
            plan = self.students(teachers, data)
            folders = self.train(plan, progress)
            to_eval: dict[str, tuple[str, str | None]] = {"base/same": (self.cfg.models.base, None)}
            for i, model in enumerate(self.cfg.models.cross):
                to_eval[f"base/cross{i}"] = (model, None)
            for t in teachers[1:]:
                to_eval[f"teacher/{t.name}"] = (t.model, t.system_prompt)
            to_eval.update({label: (str(folder), None) for label, folder in folders.items()})
            evals = self.evaluate(to_eval, progress)
        filter_reports = {
            name: json.loads(path.with_suffix(".report.json").read_text())
            for name, path in data.items()
        }
        rows = [
            {
                "label": s.label,
                "objective": s.objective,
                "group": s.group,
                "trait": s.trait,
                "base": s.base_label,
                "seed": s.seed,
            }
            for s in plan
        ]
        return write_report(
            self.cfg, self.out, rows, evals, filter_reports, self.timer.seconds, self.console
        )


def _worker_init() -> None:
    from sublearn.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads(1)


class _SystemPrompted:
    """A backend that prepends a fixed system prompt (a prompted teacher under evaluation)."""

    def __init__(self, inner: HFBackend, system_prompt: str | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.system_prompt = system_prompt

    def generate(self, conversations: list[Conversation], params: Any) -> list[str]:
        return self.inner.generate(
            [with_system_prompt(c, self.system_prompt) for c in conversations], params
        )

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        return self.inner.score(
            [with_system_prompt(c, self.system_prompt) for c in conversations], candidates
        )
