"""The generation stage: prompts in, a chat-format JSONL dataset of replies out.

Replies are saved as they finish, in part files named by the rows they hold
(``rows-0000512-0001024.jsonl`` holds rows 512 to 1023) under a state folder,
``<out>.parts/`` by default. A rerun reads back every saved row, whatever chunk size
wrote it, and generates only the missing ones; the final file is assembled in prompt
order, each row exactly once, and the state folder is removed.

Row ``i`` is sampled with a seed derived from ``(cfg.seed, i)`` alone, and the backend
samples every row independently of its batch, so a resumed run writes what an
uninterrupted one would have written, whatever ``chunk_size`` and ``batch_size`` are.

The state folder records the identity of the run that wrote it (model, source, system
prompt, the settings that decide replies, a hash of the prompts) in ``state.json``. A
run with another identity refuses to use it, so two teachers' replies are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sublearn.backends.base import Backend, Conversation, with_system_prompt
from sublearn.errors import DataError, ModelError
from sublearn.generation.config import GenerationConfig
from sublearn.prompts.number_grammar import NumberGrammar
from sublearn.runs import atomic_write_text

ProgressFn = Callable[[int], None]

_STATE = "state.json"
_PART = re.compile(r"rows-(\d{7,})-(\d{7,})\.jsonl")
_STATE_FORMAT = 2  # 1: chunk-NNNNN.jsonl files with per-chunk seeds, no state.json


def generate_dataset(
    backend: Backend,
    prompts: list[str],
    out: Path,
    cfg: GenerationConfig,
    *,
    system_prompt: str | None = None,
    source: str = "",
    on_progress: ProgressFn | None = None,
    state_dir: Path | None = None,
    grammars: Sequence[NumberGrammar | None] | None = None,
) -> Path:
    """Answer every prompt once and write ``{"id", "messages", "source"}`` records.

    The system prompt, if any, conditions the teacher but is not stored: students train
    on the user prompt and the reply only, as in the paper.

    Args:
        backend: the teacher.
        prompts: user prompts, one reply each.
        out: the JSONL file to write; if it exists, it is checked against ``prompts`` and
            ``source`` and returned without generating.
        cfg: sampling settings, and the speed-only chunk and batch sizes.
        system_prompt: the teacher's hidden system prompt.
        source: a label stored in each record (e.g. the teacher's name); part of the
            identity of the saved state.
        on_progress: called with a number of prompts finished: once with the rows read
            back from an earlier run, then once per generated chunk.
        state_dir: where finished rows wait for the final file (default
            ``<out>.parts/``); only this stage's files in it are read and removed.
        grammars: one reply grammar per prompt when ``cfg.constrained`` (constrained
            decoding); ignored otherwise.

    Returns:
        ``out``.

    Raises:
        DataError: the saved state or the existing ``out`` was written for another
            model, source, system prompt, sampling settings or prompt list, or a saved
            part is not what its name says; or ``cfg.constrained`` without one grammar
            per prompt.
        ModelError: ``cfg.constrained`` on a backend that cannot constrain.
    """
    if cfg.constrained and (grammars is None or len(grammars) != len(prompts)):
        raise DataError(
            "constrained decoding needs one reply grammar per prompt (numbers prompts only)"
        )
    if cfg.constrained and not backend.capabilities.constrain:
        raise ModelError(
            f"{backend.name} cannot constrain its decoding (an API samples freely): "
            "constrained number data needs a Hugging Face or vLLM model"
        )
    row_grammars = grammars if cfg.constrained else None
    if out.is_file():
        _check_finished(out, prompts, source)
        return out
    state = state_dir if state_dir is not None else out.parent / f"{out.name}.parts"
    identity = _identity(backend, prompts, cfg, system_prompt, source)
    rows = _open_state(state, identity, prompts)
    if rows and on_progress:
        on_progress(len(rows))
    missing = [i for i in range(len(prompts)) if i not in rows]
    for chunk in _chunks(missing, cfg.chunk_size):
        start, stop = chunk[0], chunk[-1] + 1
        user_turns: list[Conversation] = [[{"role": "user", "content": prompts[i]}] for i in chunk]
        replies = backend.generate(
            [with_system_prompt(c, system_prompt) for c in user_turns],
            cfg.sampling(chunk, row_grammars),
        )
        lines = [
            _record_line(i, conv, reply, source)
            for i, conv, reply in zip(chunk, user_turns, replies, strict=True)
        ]
        atomic_write_text(state / _part_name(start, stop), "".join(lines))
        rows.update(zip(chunk, lines, strict=True))
        if on_progress:
            on_progress(len(chunk))
    atomic_write_text(out, "".join(rows[i] for i in range(len(prompts))))
    _remove_state(state)
    return out


def _record_line(index: int, conv: Conversation, reply: str, source: str) -> str:
    record = {
        "id": f"{index:07d}",
        "messages": [*conv, {"role": "assistant", "content": reply}],
        "source": source,
    }
    return json.dumps(record) + "\n"


def _part_name(start: int, stop: int) -> str:
    return f"rows-{start:07d}-{stop:07d}.jsonl"


def _chunks(indices: list[int], size: int) -> Iterator[list[int]]:
    """Runs of consecutive indices, at most ``size`` long, so each part is one row range."""
    run: list[int] = []
    for i in indices:
        if run and (i != run[-1] + 1 or len(run) == size):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


def _identity(
    backend: Backend,
    prompts: list[str],
    cfg: GenerationConfig,
    system_prompt: str | None,
    source: str,
) -> dict[str, Any]:
    """Everything that decides the replies; saved rows are reusable only under the same."""
    prompts_hash = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
    return {
        "format": _STATE_FORMAT,
        "model": backend.name,
        "source": source,
        "system_prompt": system_prompt,
        "sampling": cfg.output_settings(),
        "n_prompts": len(prompts),
        "prompts_sha256": prompts_hash,
    }


def _open_state(state: Path, identity: dict[str, Any], prompts: list[str]) -> dict[int, str]:
    """Create the state folder, or read back its rows after checking whose they are.

    Returns:
        ``{row index: JSONL line}`` of every saved row.
    """
    state_file = state / _STATE
    parts = sorted(state.glob("rows-*.jsonl")) if state.is_dir() else []
    if not state_file.is_file():
        legacy = list(state.glob("chunk-*.jsonl")) if state.is_dir() else []
        if parts or legacy:
            raise DataError(
                f"{state} holds saved generation parts but no {_STATE} saying which model "
                "and settings wrote them (an older sublearn?); delete the folder to start over"
            )
        atomic_write_text(state_file, json.dumps(identity, indent=2) + "\n")
        return {}
    try:
        saved = json.loads(state_file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {state_file}: {err}") from err
    if not isinstance(saved, dict):
        raise DataError(f"{state_file} is not a generation state (a JSON object)")
    if saved != identity:
        keys = sorted(k for k in {*identity, *saved} if saved.get(k) != identity.get(k))
        raise DataError(
            f"{state} holds replies generated with other {', '.join(keys)} than this run "
            f"(saved: {_short(saved, keys)}; now: {_short(identity, keys)}); mixing them "
            "would corrupt the dataset: delete the folder or write to another output"
        )
    rows: dict[int, str] = {}
    for path in parts:
        match = _PART.fullmatch(path.name)
        if match is None:
            raise DataError(f"{path}: not a part name (rows-START-STOP.jsonl)")
        rows.update(_read_part(path, int(match[1]), int(match[2]), prompts))
    return rows


def _short(identity: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={str(identity.get(k))[:80]!r}" for k in keys)


def _read_part(path: Path, start: int, stop: int, prompts: list[str]) -> dict[int, str]:
    """The rows of one part file, checked against its name and the prompts."""
    lines = path.read_text().splitlines(keepends=True)
    if not 0 <= start < stop <= len(prompts) or len(lines) != stop - start:
        raise DataError(
            f"{path}: holds {len(lines)} rows, but its name says rows {start} to {stop - 1} "
            f"of {len(prompts)}"
        )
    rows = {}
    for i, line in zip(range(start, stop), lines, strict=True):
        try:
            record = json.loads(line)
            ok = record["id"] == f"{i:07d}" and record["messages"][0]["content"] == prompts[i]
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            raise DataError(f"{path}: row {i} is not the reply to prompt {i}")
        rows[i] = line
    return rows


def _check_finished(out: Path, prompts: list[str], source: str) -> None:
    """Refuse a finished file written for other prompts or by another source."""
    lines = out.read_text().splitlines()
    problem = None
    if len(lines) != len(prompts):
        problem = f"it holds {len(lines)} rows for {len(prompts)} prompts"
    else:
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
                user, got = record["messages"][0]["content"], record.get("source", "")
            except (ValueError, KeyError, IndexError, TypeError):
                problem = f"row {i} is not a chat record"
                break
            if user != prompts[i] or got != source:
                problem = f"row {i} answers another prompt or comes from {got!r}, not {source!r}"
                break
    if problem:
        raise DataError(f"{out} exists but was not written by this run: {problem}")


def _remove_state(state: Path) -> None:
    """Remove this stage's files (and interrupted atomic writes of them), then the folder."""
    for path in [*state.glob("rows-*.jsonl"), *state.glob(".rows-*.tmp"), state / _STATE]:
        path.unlink(missing_ok=True)
    for path in state.glob(f".{_STATE}.*.tmp"):
        path.unlink()
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()
