"""``sublearn defend`` on a file as one engine task: one task per input dataset.

The key hashes the defence config with the dataset (and any other teachers' files that
``mix_teachers`` reads) replaced by the SHA-256 of their content, each model reference's
fingerprint, and neither the output path nor the speed settings (device, batch size,
provider settings: declared on the config's fields). The task's folder holds the cleaned
copy (``data.jsonl``) and its report (``data.jsonl.report.json``), which the command
copies to ``--out`` and ``<out>.report.json``.

The ``defend`` kind of experiments (``engine/kinds.py``) cleans a seed's paired rows
from the store; this one cleans a user's file. Both call :func:`run_defences`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from sublearn.defend.config import DefendConfig
from sublearn.engine.task import Task, TaskContext, TaskParams
from sublearn.errors import ModelError
from sublearn.experiments.copy_out import copy_file
from sublearn.experiments.keyed import file_digest, require_unchanged
from sublearn.keys import SPEED_MARK, key_params

KIND = "defend-file"

CLEANED = "data.jsonl"
"""The cleaned copy inside the task's folder; its report is ``CLEANED + ".report.json"``."""


class DefendFileParams(TaskParams):
    """A ``defend-file`` task: what determines its output, and the config it runs."""

    defend: DefendConfig = Field(
        description="The defences, with every file as its content digest (sha256:...) and "
        "no output path (its speed settings left out of the key)."
    )
    models: dict[str, str] = Field(
        description="Each model reference (base, teacher, paraphraser) -> its fingerprint."
    )
    # Out of the key (in the task's runtime): what it determines is keyed above, by
    # content, and the task checks that the two still agree before it runs.
    config: DefendConfig = Field(
        description="The config as given, its files, output path and speed settings included.",
        json_schema_extra=SPEED_MARK,
    )

    @classmethod
    def of(cls, cfg: DefendConfig) -> DefendFileParams:
        """The params of cleaning ``cfg.data``; reads every input file.

        Raises:
            DataError: an input file does not exist.
        """
        keyed = cfg.model_dump(mode="json")
        keyed |= {"data": file_digest(cfg.data), "out": ""}
        refs = [cfg.base, cfg.teacher]
        for defence in keyed["defences"]:
            if defence["type"] == "mix_teachers":
                defence["others"] = [file_digest(path) for path in defence["others"]]
            if defence["type"] == "paraphrase":
                refs.append(defence["model"])
        models = {ref: _fingerprint(ref) for ref in dict.fromkeys(r for r in refs if r is not None)}
        return cls(defend=DefendConfig.model_validate(keyed), models=models, config=cfg)


def _fingerprint(ref: str) -> str:
    from sublearn.backends.refs import ModelRef

    try:
        return ModelRef.parse(ref).fingerprint()
    except ModelError:
        return ref  # unresolvable here: the defence that opens it says why, with its own words


def keyed_params(cfg: DefendConfig) -> dict[str, Any]:
    """The task params of ``cfg`` (JSON-ready); reads every input file.

    Raises:
        DataError: an input file does not exist.
    """
    return key_params(DefendFileParams.of(cfg))


def defend_task(cfg: DefendConfig) -> Task:
    """The task that cleans ``cfg.data``."""
    return Task.of(KIND, f"defend/{Path(cfg.data).name}", DefendFileParams.of(cfg))


def run_defend_file(ctx: TaskContext, p: DefendFileParams) -> dict[str, Any]:
    """Apply the defences; write the cleaned copy and its report into the task's folder."""
    from rich.console import Console

    from sublearn.defend.run import run_defences

    cfg = p.config
    require_unchanged(ctx.params, keyed_params(cfg), ctx.spec.name)
    console = Console()
    report = run_defences(
        cfg, log=lambda line: console.print(line, highlight=False), write_to=ctx.out / CLEANED
    )
    keep = ("rows_in", "rows_out", "rows_masked", "characters_masked", "reply_characters")
    return {k: report[k] for k in keep if k in report}


def copy_out(entry: Path, cfg: DefendConfig) -> dict[str, Any]:
    """Write a finished task's cleaned copy to ``cfg.out`` and its report beside it.

    The stored report names the files of the call that computed it; the copy names this
    call's (``data``, ``out`` and ``config``), as the command wrote it before it ran as a
    task.

    Returns:
        The report as written.
    """
    from sublearn.defend.run import report_path
    from sublearn.runs import atomic_write_json, read_json

    copy_file(entry / CLEANED, Path(cfg.out))
    report = read_json(report_path(entry / CLEANED))
    report |= {"data": cfg.data, "out": cfg.out, "config": cfg.model_dump(mode="json")}
    atomic_write_json(report_path(cfg.out), report)
    return report
