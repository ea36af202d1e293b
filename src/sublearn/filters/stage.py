"""The filter stage: teacher samples in, the training set and a report of what was dropped out.

Each record's reply (its last message, which must be the assistant's) goes through the
number-format parser and then the trait-word leakage check; the survivors are
subsampled to a fixed size, as the paper keeps a random 10,000 of 30,000 samples.

Every record gets exactly one verdict, the first check it fails, in the order
invalid_format, too_many_numbers, too_small, too_large, banned_number, leak. With the
format check on, a reply that passes it is digits and separators only, so ``leak``
counts stay zero for numbers data; the check earns its keep on code or reasoning data,
run with ``check_format=False``.

Subsampling keeps the chosen records in their input order (a seeded choice of which
records, not a shuffle), so the output is a subsequence of the input: easy to diff,
and the fine-tuning stage shuffles anyway.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field, field_validator, model_validator

from sublearn.config import Config
from sublearn.errors import DataError, NotEnoughRowsError
from sublearn.filters.banned import PRESETS, banned_numbers
from sublearn.filters.leakage import leaks
from sublearn.filters.numbers import Rejection, parse_numbers
from sublearn.jsonl import read_jsonl
from sublearn.runs import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from sublearn.filters.checks import Check

T = TypeVar("T")

LEAK = "leak"


class DatasetFormatError(DataError):
    """A JSONL dataset line that is not a usable record; the message names file and line."""


class NotEnoughRecordsError(NotEnoughRowsError):
    """Fewer records survived filtering than ``keep`` asks for, with ``require_count`` on."""


class FilterConfig(Config):
    """What the filter stage accepts and how many records it keeps."""

    check_format: bool = Field(
        default=True,
        description="Apply the number-format parser; turn off for code or reasoning data, "
        "where only the leakage check applies.",
    )
    max_count: int = Field(default=10, ge=1, description="Most numbers a reply may contain.")
    min_value: int = Field(default=0, ge=0, description="Smallest allowed number.")
    max_value: int = Field(default=999, ge=0, description="Largest allowed number.")
    banned: str = Field(
        default="none",
        description="Banned-numbers preset: none, claude, gpt, or paper (their union, "
        "for the misalignment experiments).",
    )
    leakage_words: list[str] = Field(
        default_factory=list,
        description="Trait words whose mention drops a reply (the pipeline fills in the "
        "trait, e.g. ['owl']); empty disables the check.",
    )
    leakage_substring: bool = Field(
        default=False,
        description="Also drop replies containing a trait word inside a longer word "
        "(owlet, bowl); stricter, with false positives.",
    )
    keep: int | None = Field(
        default=None,
        ge=1,
        description="Records to keep after filtering, chosen at random with seed; "
        "None keeps every accepted record.",
    )
    seed: int = Field(default=0, description="Seed of the subsample.")
    require_count: bool = Field(
        default=False,
        description="Fail when fewer than keep records pass the filters; otherwise keep "
        "them all and record a warning in the report.",
    )

    @field_validator("banned")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown banned-numbers preset (choices: {', '.join(PRESETS)})")
        return value

    @field_validator("leakage_words")
    @classmethod
    def _real_words(cls, value: list[str]) -> list[str]:
        if any(not any(ch.isalnum() for ch in word) for word in value):
            raise ValueError("every leakage word needs at least one letter or digit")
        return value

    @model_validator(mode="after")
    def _ordered_range(self) -> FilterConfig:
        if self.max_value < self.min_value:
            raise ValueError(f"max_value ({self.max_value}) is below min_value ({self.min_value})")
        return self


class FilterReport(BaseModel):
    """Counts of one filter run; written as JSON next to the output."""

    input_path: str = Field(description="The dataset that was filtered.")
    output_path: str = Field(description="Where the kept records went.")
    total: int = Field(description="Records read.")
    accepted: int = Field(description="Records that passed every check.")
    rejected: dict[str, int] = Field(
        description="Records dropped per reason; every reason present, 0 if none."
    )
    leading_zeros: int = Field(
        default=0, description="Accepted replies with a zero-padded number such as 007."
    )
    trait_mentions: int = Field(
        default=0,
        description="Replies that name a leakage word, whatever check dropped them (none "
        "survives: a reply naming one fails the format check or the leakage check).",
    )
    keep: int | None = Field(description="Records asked for; None means all accepted.")
    kept: int = Field(description="Records written.")
    warnings: list[str] = Field(default_factory=list, description="Things worth a look.")
    config: dict[str, Any] = Field(default_factory=dict, description="The settings used.")

    @property
    def rejection_rate(self) -> float:
        """Share of records dropped by the checks (before subsampling); NaN when empty."""
        return (self.total - self.accepted) / self.total if self.total else float("nan")


def subsample(records: Sequence[T], n: int | None, seed: int) -> list[T]:
    """A seeded random choice of ``n`` records, in their original order.

    Args:
        records: the records to choose from.
        n: how many to keep; None, or at least ``len(records)``, keeps all.
        seed: the seed; the same records, n and seed always give the same choice.

    Returns:
        The chosen records, in input order.

    Raises:
        ValueError: if ``n`` is negative.
    """
    if n is None or n >= len(records):
        return list(records)
    if n < 0:
        raise ValueError(f"cannot keep a negative number of records ({n})")
    chosen = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in chosen]


def _reply(record: Any, where: str) -> str:
    """The assistant's reply of a record; DatasetFormatError if there is none."""
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetFormatError(f"{where}: record has no 'messages' list")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise DatasetFormatError(f"{where}: the last message is not the assistant's reply")
    content = last.get("content")
    if not isinstance(content, str):
        raise DatasetFormatError(f"{where}: the assistant's content is not a string")
    return content


def default_report_path(out_path: Path) -> Path:
    """``data.jsonl`` -> ``data.report.json``, the report's home beside the output."""
    return out_path.with_suffix(".report.json")


def filter_dataset(
    in_path: Path,
    out_path: Path,
    cfg: FilterConfig,
    report_path: Path | None = None,
    on_verdict: Callable[[dict[str, Any], str | None], None] | None = None,
) -> FilterReport:
    """Filter a JSONL dataset of chat records and keep a seeded subsample.

    Kept records are written back as the lines that were read (surrounding whitespace
    trimmed), so key order and every extra key survive. Blank lines are skipped.

    Args:
        in_path: JSONL, one ``{"messages": [..., {"role": "assistant", ...}], ...}`` per line.
        out_path: where the kept records go (JSONL, written atomically).
        cfg: the filter settings.
        report_path: where the report goes; default :func:`default_report_path`.
        on_verdict: called with every record and the reason it was dropped (None when
            accepted), so a caller can save per-row verdicts.

    Returns:
        The report, also written as JSON.

    Raises:
        DatasetFormatError: on a line that is not JSON (or not UTF-8) or lacks an assistant reply,
            naming the file and line number.
        NotEnoughRecordsError: when ``cfg.require_count`` is on and too few records pass.
    """
    banned = banned_numbers(cfg.banned)
    rejected = {reason.value: 0 for reason in Rejection}
    rejected[LEAK] = 0
    accepted: list[str] = []
    total = 0
    leading_zeros = 0
    trait_mentions = 0

    for lineno, line, record in read_jsonl(in_path, DatasetFormatError):
        where = f"{in_path}:{lineno}"
        reply = _reply(record, where)
        total += 1
        mentions = bool(cfg.leakage_words) and (
            leaks(reply, cfg.leakage_words, substring=cfg.leakage_substring) is not None
        )
        trait_mentions += mentions
        if cfg.check_format:
            parsed = parse_numbers(
                reply,
                max_count=cfg.max_count,
                min_value=cfg.min_value,
                max_value=cfg.max_value,
                banned=banned,
            )
            if parsed.rejection is not None:
                rejected[parsed.rejection.value] += 1
                if on_verdict:
                    on_verdict(record, parsed.rejection.value)
                continue
            leading_zeros += parsed.leading_zeros
        if mentions:
            rejected[LEAK] += 1
            if on_verdict:
                on_verdict(record, LEAK)
            continue
        if on_verdict:
            on_verdict(record, None)
        accepted.append(line)

    warnings: list[str] = []
    if cfg.keep is not None and len(accepted) < cfg.keep:
        message = f"only {len(accepted)} of {total} records passed the filters; keep={cfg.keep}"
        if cfg.require_count:
            raise NotEnoughRecordsError(f"{in_path}: {message} (require_count is on)")
        warnings.append(message + "; kept them all")
    if total == 0:
        warnings.append("the input has no records")

    kept = subsample(accepted, cfg.keep, cfg.seed)
    atomic_write_text(out_path, "".join(line + "\n" for line in kept))
    report = FilterReport(
        input_path=str(in_path),
        output_path=str(out_path),
        total=total,
        accepted=len(accepted),
        rejected=rejected,
        leading_zeros=leading_zeros,
        trait_mentions=trait_mentions,
        keep=cfg.keep,
        kept=len(kept),
        warnings=warnings,
        config=cfg.model_dump(mode="json"),
    )
    atomic_write_json(report_path or default_report_path(out_path), report.model_dump(mode="json"))
    return report


def filter_and_check(
    data: Path,
    out: Path,
    cfg: FilterConfig,
    *,
    note: dict[str, Any] | None = None,
    checks: list[Check] | None = None,
    judges: list[Any] | None = None,
    trait: str | None = None,
    references: list[str] | None = None,
    judge_cache: Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """The filter, then the check chain, over generated data; what the engine's filter runs.

    Writes ``accepted.jsonl``, ``report.json`` and every row's verdict (``verdicts.jsonl``)
    into ``out``. Judge verdicts are cached under ``judge_cache``, so a killed run asks a
    judge only about rows it had not judged.

    Args:
        data: the generated rows (``data.jsonl``).
        out: the output folder.
        cfg: the filter.
        note: extra entries for the report (how the data was decoded).
        checks: the checks after the filter (their judges are ``judges``).
        judges: each check's :class:`~sublearn.judges.config.JudgeConfig` (None: no judge).
        trait: the trait word judges look for.
        references: each prompt's reference answer by position, when a check reads it
            (generated rows are numbered by prompt position, generation/stage.py).
        judge_cache: a folder that survives interruptions, for judge caches.
        device: where a local judge runs.

    Returns:
        Total and accepted rows (and each check's counts).
    """
    first: dict[str, str | None] = {}
    report = filter_dataset(
        data,
        out / "accepted.jsonl",
        cfg,
        report_path=out / "report.json",
        on_verdict=lambda record, reason: first.__setitem__(str(record["id"]), reason),
    )
    # ``out`` may be a temporary folder renamed into place later: name the output relative
    # to it, where it will stay.
    dump = report.model_copy(update={"output_path": "accepted.jsonl"}).model_dump(mode="json")
    dump |= note or {}
    atomic_write_json(out / "report.json", dump)
    if not checks:
        _write_rows(
            out / "verdicts.jsonl",
            [{"id": i, "kept": r is None, "reason": r} for i, r in first.items()],
        )
        return {"total": report.total, "accepted": report.accepted}
    assert judges is not None and judge_cache is not None
    return _check_chain(out, dump, first, checks, judges, trait, references, judge_cache, device)


def _check_chain(
    out: Path,
    report: dict[str, Any],
    first: dict[str, str | None],
    checks: list[Check],
    judge_configs: list[Any],
    trait: str | None,
    prompt_references: list[str] | None,
    judge_cache: Path,
    device: str,
) -> dict[str, Any]:
    """The check chain after the filter: rewrites accepted.jsonl, report.json, verdicts."""
    import json

    from sublearn.filters.checks import JudgeCheck, run_checks, with_checks
    from sublearn.judges.config import make_judge

    rows = [json.loads(line) for line in (out / "accepted.jsonl").read_text().splitlines()]
    references = None
    if prompt_references is not None:
        references = {r["id"]: prompt_references[int(r["id"])] for r in rows}
    judges: list[Any] = []
    try:
        for i, (check, jcfg) in enumerate(zip(checks, judge_configs, strict=True)):
            if not isinstance(check, JudgeCheck):
                judges.append(None)
                continue
            jcfg = jcfg.model_copy(update={"device": device})
            judges.append(
                make_judge(jcfg, cache_path=judge_cache / f"judge-{i}.jsonl", target=trait)
            )
        verdicts, counts = run_checks(rows, checks, references=references, judges=judges)
    finally:
        for judge in judges:
            if judge is not None:
                judge.close()
    kept = {v.id for v in verdicts if v.reason is None}
    _write_rows(out / "accepted.jsonl", [r for r in rows if str(r["id"]) in kept])
    by_id = {v.id: v.to_dict() for v in verdicts}
    _write_rows(
        out / "verdicts.jsonl",
        [by_id.get(i, {"id": i, "kept": False, "reason": r}) for i, r in first.items()],
    )
    report = with_checks(report, rows, verdicts, counts)
    atomic_write_json(out / "report.json", report)
    return {"total": report["total"], "accepted": len(kept), "checks": counts}


def _write_rows(path: Path, records: list[dict[str, Any]]) -> None:
    import json

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
