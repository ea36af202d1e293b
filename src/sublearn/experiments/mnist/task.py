"""``sublearn mnist`` as one engine task: the six conditions of one seed, in the store.

The task's key is the experiment's config without its speed settings (device, threads,
evaluation batch: declared on the config's fields, see :mod:`sublearn.keys`) and with the
IDX files it reads identified by content instead of by folder, so a rerun, or
the same experiment from another folder or with other threads, is found in the store.
Its folder holds what the command's run folder shows: ``summary.json``,
``per_model.csv``, ``timing.json``, ``curves.jsonl`` and ``accuracy.png``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sublearn.engine.task import Task, TaskContext, TaskParams
from sublearn.experiments.keyed import at_defaults, file_digest, require_unchanged
from sublearn.experiments.mnist.config import MnistConfig
from sublearn.keys import SPEED_MARK, key_params

KIND = "mnist"

LOCATIONS = ("data_dir",)
"""Where the input files are: their content is keyed instead."""


class MnistParams(TaskParams):
    """An ``mnist`` task: what determines its output, and the config it runs."""

    experiment: MnistConfig = Field(
        description="The experiment (its speed settings left out of the key), without its "
        "data folder."
    )
    data_files: dict[str, str] = Field(
        description="SHA-256 of each IDX file read, by file stem; empty for the bundled digits."
    )
    # Out of the key (in the task's runtime): what it determines is keyed above, by
    # content, and the task checks that the two still agree before it runs.
    config: MnistConfig = Field(
        description="The config as given, its data folder and speed settings included.",
        json_schema_extra=SPEED_MARK,
    )

    @classmethod
    def of(cls, cfg: MnistConfig) -> MnistParams:
        """The params of the experiment ``cfg``; reads its IDX files.

        Raises:
            DataError: an IDX file is missing.
        """
        return cls(experiment=at_defaults(cfg, LOCATIONS), data_files=data_digests(cfg), config=cfg)


def data_digests(cfg: MnistConfig) -> dict[str, str]:
    """The content of every IDX file ``cfg`` reads (none for the bundled digits).

    Raises:
        DataError: a file is missing (the message lists the names looked for).
    """
    if cfg.dataset == "digits":
        return {}
    from sublearn.experiments.mnist.data import IDX_FILES, find_idx_file

    folder = cfg.resolved_data_dir()
    return {
        stem: file_digest(find_idx_file(folder, stem, cfg.dataset)) for stem in IDX_FILES.values()
    }


def keyed_params(cfg: MnistConfig) -> dict[str, Any]:
    """The task params of ``cfg``: what its key hashes (JSON-ready)."""
    return key_params(MnistParams.of(cfg))


def mnist_task(cfg: MnistConfig) -> Task:
    """The task that runs ``cfg``'s six conditions.

    Raises:
        DataError: an IDX file is missing.
    """
    return Task.of(KIND, f"mnist/{cfg.dataset}/seed{cfg.seed}", MnistParams.of(cfg))


class _Reporter:
    """Training steps of both phases as one count, for the runner's progress bar."""

    def __init__(self, ctx: TaskContext, total: int) -> None:
        self.ctx, self.total, self.done = ctx, total, 0

    def start(self, phase: str, total: int) -> None:
        self.ctx.progress(self.done, self.total)

    def advance(self) -> None:
        self.done += 1
        self.ctx.progress(self.done, self.total)


def run_mnist(ctx: TaskContext, p: MnistParams) -> dict[str, Any]:
    """Train and evaluate the six conditions; write the run folder's files into the task."""
    from sublearn.experiments.mnist.data import load_data
    from sublearn.experiments.mnist.experiment import run_conditions, write_outputs

    cfg = p.config
    require_unchanged(ctx.params, keyed_params(cfg), ctx.spec.name)
    data = load_data(cfg.dataset, cfg.resolved_data_dir())
    total = cfg.teacher_total_steps(data.n_train) + cfg.student_total_steps(data.n_train)
    result = run_conditions(cfg, data=data, progress=_Reporter(ctx, total))
    title = (
        f"{cfg.dataset}: {cfg.n_models} models, m={cfg.n_aux}, "
        f"{result.steps['teacher']}+{result.steps['student']} steps, {cfg.noise} noise"
    )
    write_outputs(result, ctx.out, title)
    return {"steps": result.steps, "seconds": result.seconds["total"]}
