"""``sublearn audit`` as one engine task: keyed by the files' content and the audit's settings.

The key hashes the audit config with its data and control files replaced by the SHA-256
of their content, each model reference's fingerprint, and neither the report folder nor
the speed settings (device, batch size: declared on the config's fields). The task's
folder holds what the command writes to ``--out``: ``audit.json``, ``audit.md``,
``figures/`` and the token scores (``scores/``). Scores are cached in the task's state
folder while it runs, so a killed audit resumes without scoring again what it had
scored; scores already in the report folder from an earlier audit of the same files are
reused too (they are keyed by model, file content, rows and system prompt).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from sublearn.audit.config import AuditConfig
from sublearn.engine.task import Task, TaskContext, TaskParams
from sublearn.errors import ModelError
from sublearn.experiments.copy_out import copy_entry
from sublearn.experiments.keyed import at_defaults, file_digest, require_unchanged
from sublearn.keys import SPEED_MARK, key_params, speed_field

KIND = "audit"

LOCATIONS = ("out",)
"""Where the report goes; left out of the key."""


class AuditParams(TaskParams):
    """An ``audit`` task: what determines its output, and the config it runs."""

    audit: AuditConfig = Field(
        description="The audit, its data and control as content digests (sha256:...), "
        "without its report folder (its speed settings left out of the key)."
    )
    models: dict[str, str] = Field(
        description="Each model reference (base, teachers) -> its content fingerprint."
    )
    # Out of the key (in the task's runtime): what it determines is keyed above, by
    # content, and the task checks that the two still agree before it runs.
    config: AuditConfig = Field(
        description="The config as given, its files, report folder and speed settings included.",
        json_schema_extra=SPEED_MARK,
    )
    score_cache: str | None = speed_field(
        None, "A folder of token scores an earlier audit left (reused, not recomputed)."
    )

    @classmethod
    def of(cls, cfg: AuditConfig) -> AuditParams:
        """The params of the audit ``cfg``; reads the data and control files.

        Raises:
            DataError: the data or control file does not exist.
        """
        keyed = at_defaults(cfg, LOCATIONS).model_copy(
            update={
                "data": file_digest(cfg.data),
                "control": file_digest(cfg.control) if cfg.control is not None else None,
            }
        )
        refs = [r for r in (cfg.base, *cfg.teachers) if r is not None]
        models = {ref: _fingerprint(ref) for ref in dict.fromkeys(refs)}
        score_cache = str(Path(cfg.out) / "scores")
        return cls(audit=keyed, models=models, config=cfg, score_cache=score_cache)


def _fingerprint(ref: str) -> str:
    from sublearn.backends.refs import ModelRef

    try:
        return ModelRef.parse(ref).fingerprint()
    except ModelError:
        # Unresolvable here: a detector that needs it fails with the loader's own message,
        # and one that does not still runs; the reference stands for itself in the key.
        return ref


def keyed_params(cfg: AuditConfig) -> dict[str, Any]:
    """The task params of ``cfg`` (JSON-ready); reads the data and control files.

    Raises:
        DataError: the data or control file does not exist.
    """
    return key_params(AuditParams.of(cfg))


def audit_task(cfg: AuditConfig) -> Task:
    """The task that audits ``cfg.data``; scores already in ``cfg.out/scores`` are reused."""
    return Task.of(KIND, f"audit/{Path(cfg.data).name}", AuditParams.of(cfg))


def run_audit_task(ctx: TaskContext, p: AuditParams) -> dict[str, Any]:
    """Run every detector; write the report and the token scores into the task's folder."""
    from rich.console import Console

    from sublearn.audit.run import run_audit

    cfg = p.config
    require_unchanged(ctx.params, keyed_params(cfg), ctx.spec.name)
    scores = ctx.state / "scores"
    scores.mkdir(exist_ok=True)
    earlier = Path(p.score_cache or scores)
    for cached in sorted(earlier.glob("*.json")) if earlier != scores else []:
        if not (scores / cached.name).exists():
            shutil.copy2(cached, scores / cached.name)
    used: set[str] = set()
    verdicts = run_audit(
        cfg, Console(), folder=ctx.out, scores_folder=scores, table=False, used_scores=used
    )
    # Only this audit's scores: what else the report folder held is no part of its output.
    for name in sorted(used):
        (ctx.out / "scores").mkdir(exist_ok=True)
        shutil.copy2(scores / name, ctx.out / "scores" / name)
    return {
        "detectors": len(verdicts),
        "flagged": [v.detector for v in verdicts if v.flagged],
    }


def copy_out(entry: Path, folder: Path, cfg: AuditConfig) -> dict[str, Any]:
    """Copy a finished audit task into the report folder; ``audit.json`` as written there.

    The stored report names the files of the call that computed it; the copy names this
    call's (``config`` in ``audit.json``, the data and control lines of ``audit.md``), as
    the command wrote it before it ran as a task.
    """
    from sublearn.runs import atomic_write_json, atomic_write_text, read_json

    copy_entry(entry, folder)
    report = read_json(folder / "audit.json")
    config = cfg.model_dump(mode="json")
    if report["config"] != config:
        stored = AuditConfig.model_validate(report["config"])
        report["config"] = config
        atomic_write_json(folder / "audit.json", report)
        markdown = (folder / "audit.md").read_text()
        for old, new in (
            (f"# Audit of {stored.data}\n", f"# Audit of {cfg.data}\n"),
            (f"- control: {stored.control or 'none'}\n", f"- control: {cfg.control or 'none'}\n"),
        ):
            markdown = markdown.replace(old, new, 1)
        atomic_write_text(folder / "audit.md", markdown)
    return report
