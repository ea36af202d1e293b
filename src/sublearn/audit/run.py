"""Run an audit: load the rows, score them under each model once, run every detector.

Models are opened one at a time (base, then each teacher). Token scores are cached in
``<out>/scores/`` keyed by a hash of the model, the file's content, the rows and the
system prompt, so an interrupted audit resumes where it stopped and a rerun with other
detector settings loads no model it has already read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sublearn.audit.config import AuditConfig
from sublearn.audit.data import Row, load_rows
from sublearn.audit.detectors import DETECTORS, Detection
from sublearn.audit.result import Verdict, skipped
from sublearn.backends.base import TokenScore
from sublearn.errors import ConfigError
from sublearn.prompts.persona import preference_system_prompt
from sublearn.runs import atomic_write_json, content_hash, file_sha256


def _needs(cfg: AuditConfig) -> dict[str, str | None]:
    """Per detector, what it lacks to run (None when it can run)."""
    out: dict[str, str | None] = {}
    for d in cfg.detectors:
        why = d.lacks(cfg)
        if why is None and cfg.control is None and d.needs_control:
            why = "needs control data (--control)"
        out[d.label()] = why
    return out


class _ScoreCache:
    """Token scores on disk, one JSON file per (model, dataset rows, system prompt)."""

    def __init__(self, folder: Path, used: set[str] | None = None) -> None:
        self.folder = folder
        self.used = used if used is not None else set()  # names of files read or written

    def path(self, ref: str, rows_key: str, system_prompt: str | None) -> Path:
        return self.folder / f"{content_hash([ref, rows_key, system_prompt], 1)}.json"

    def load(self, path: Path) -> list[list[TokenScore]] | None:
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a torn file from before atomic writes: recompute
        self.used.add(path.name)
        return [[TokenScore(*t) for t in row] for row in raw]

    def save(self, path: Path, scores: list[list[TokenScore]]) -> None:
        raw = [
            [[t.text, t.start, t.end, t.logprob, t.top, t.top_logprob] for t in row]
            for row in scores
        ]
        atomic_write_json(path, raw)
        self.used.add(path.name)


def run_audit(
    cfg: AuditConfig,
    console: Console | None = None,
    folder: Path | None = None,
    scores_folder: Path | None = None,
    table: bool = True,
    used_scores: set[str] | None = None,
) -> list[Verdict]:
    """Audit ``cfg.data`` with every configured detector; write the report to ``cfg.out``.

    Args:
        cfg: the audit.
        console: where progress and the table go.
        folder: where the report is written instead of ``cfg.out`` (an engine task's
            output folder); ``audit.json`` still records ``cfg``.
        scores_folder: the token-score cache (default ``<folder>/scores``).
        table: print the verdicts' table at the end.
        used_scores: filled with the names of the score files the audit read or wrote.

    Returns:
        One verdict per detector, in config order (skipped ones say why).

    Raises:
        ConfigError: the config asks for nothing that can run.
        DataError: a dataset is missing or malformed.
        ModelError: a model cannot be loaded or cannot score replies.
    """
    from sublearn.audit.report import print_audit_table, write_audit_report

    console = console or Console()
    started = time.perf_counter()
    out = Path(folder if folder is not None else cfg.out)
    rows = load_rows(cfg.data, cfg.max_rows, cfg.seed)
    control = load_rows(cfg.control, cfg.max_rows, cfg.seed + 1) if cfg.control else None
    if cfg.teachers and cfg.base is None:
        raise ConfigError("teachers are compared with their base: give --base as well")
    if cfg.trait is not None:
        from sublearn.evaluation.spelling import require_spellable

        base = str(cfg.base) if cfg.base is not None else None
        require_spellable(cfg.trait.word, [base, *cfg.teachers], "trait")
    needs = _needs(cfg)
    if all(why is not None for why in needs.values()):
        raise ConfigError(
            "no detector can run with what was given: "
            + "; ".join(f"{name} {why}" for name, why in needs.items())
        )
    sets: dict[str, tuple[list[Row], str]] = {"data": (rows, cfg.data)}
    if control is not None and cfg.control is not None:
        sets["control"] = (control, cfg.control)
    keys = {
        name: f"{file_sha256(path)}:{[r.index for r in rs]}" for name, (rs, path) in sets.items()
    }
    cache = _ScoreCache(scores_folder or out / "scores", used_scores)
    scores: dict[tuple[str, str, str | None], list[list[TokenScore]]] = {}
    runnable = [d for d in cfg.detectors if needs[d.label()] is None]
    trait_prompt = None
    if cfg.trait is not None:
        trait_prompt = preference_system_prompt(cfg.trait.word, cfg.trait.category)

    # What each model must score: (set name, system prompt) pairs.
    jobs: dict[str, set[tuple[str, str | None]]] = {}
    for d in runnable:
        for ref, prompt in d.score_needs(cfg, trait_prompt):
            jobs.setdefault(ref, set()).update((s, prompt) for s in sets)
    # Detectors that score prompts of their own under the base while it is open.
    entangling = [d for d in runnable if DETECTORS.metadata(d.type).get("with_base")]
    if entangling:
        jobs.setdefault(str(cfg.base), set())

    verdicts: dict[str, Verdict] = {}
    for ref, wanted in jobs.items():
        todo = []
        for s, prompt in sorted(wanted, key=lambda x: (x[0], x[1] or "")):
            path = cache.path(ref, keys[s], prompt)
            cached = cache.load(path)
            if cached is not None:
                scores[(ref, s, prompt)] = cached
            else:
                todo.append((s, prompt, path))
        if not todo and not (ref == str(cfg.base) and entangling):
            continue
        from sublearn.audit.scoring import open_scorer, token_scores

        console.print(f"loading {ref}")
        backend = open_scorer(ref, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)
        try:
            with _progress(console) as progress:
                for s, prompt, path in todo:
                    label = f"{s}{' + trait prompt' if prompt else ''}"
                    bar = progress.add_task(f"{ref} on {label}", total=len(sets[s][0]))
                    result = token_scores(
                        backend,
                        sets[s][0],
                        prompt,
                        progress=lambda n, bar=bar: progress.advance(bar, n),
                    )
                    cache.save(path, result)
                    scores[(ref, s, prompt)] = result
            if ref == str(cfg.base):
                for d in entangling:
                    console.print(f"{d.type}: scoring candidate traits under {ref}")
                    detection = Detection(d, cfg, rows, control, scores, trait_prompt, backend)
                    verdicts[d.label()] = DETECTORS.get(d.type)(detection)
        finally:
            backend.close()

    for d in cfg.detectors:
        name = d.label()
        few = _too_few_rows(rows, control)
        if needs[name] is not None:
            verdicts[name] = skipped(name, d.type, "", str(needs[name]))
        elif few is not None:
            verdicts[name] = skipped(name, d.type, "", few)
        elif name not in verdicts:
            detection = Detection(d, cfg, rows, control, scores, trait_prompt)
            verdicts[name] = DETECTORS.get(d.type)(detection)
        _warn_below_chance(verdicts[name])
    ordered = [verdicts[d.label()] for d in cfg.detectors]
    meta: dict[str, Any] = {
        "rows": len(rows),
        "control_rows": len(control) if control else 0,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_audit_report(out, cfg, ordered, meta)
    if table:
        print_audit_table(console, ordered)
    return ordered


MIN_ROWS = 10
"""Fewest rows in the audited set (and the control) for any verdict at all."""


def _too_few_rows(rows: list[Row], control: list[Row] | None) -> str | None:
    """Why an audit this small gives no verdict ("clear" from one row means nothing)."""
    if len(rows) < MIN_ROWS:
        return f"too few rows ({len(rows)}, needs {MIN_ROWS})"
    if control is not None and len(control) < MIN_ROWS:
        return f"too few control rows ({len(control)}, needs {MIN_ROWS})"
    return None


def _warn_below_chance(verdict: Verdict) -> None:
    """An AUC interval wholly below 0.5 is a warning about the data or the method.

    Audited rows that look *less* like the trait than the control rows are not "clear":
    the control differs from the data in some other way, or paired rows were split.
    """
    if verdict.ci is None or verdict.score is None or verdict.ci[1] >= 0.5:
        return
    if "AUC" not in verdict.summary and "AUC" not in verdict.statistic:
        return
    verdict.flagged = False
    verdict.warning = (
        f"AUC {verdict.score:.3f} [{verdict.ci[0]:.3f}, {verdict.ci[1]:.3f}] is below chance: "
        "the audited rows differ from the control in the opposite direction; check that the "
        "control is the same kind of data, written for the same prompts"
    )
    verdict.summary = f"warning: {verdict.warning}"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
