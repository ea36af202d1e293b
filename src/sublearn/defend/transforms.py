"""The defences as pure functions: chat records in, cleaned records and a stats dict out.

A record is ``{"messages": [..., assistant reply], ...}``; any other key is carried
through. Masks go into the record's ``"loss_mask"``: character spans ``[start, end)`` of
the last message's content that the trainer gives no loss, kept sorted and merged
(overlapping or touching spans become one). No function here mutates its input.

Model-free defences take the records alone. Score-based ones take what
:mod:`sublearn.defend.run` measured on those very records, in the same order: a
log-likelihood shift per row, or a log-ratio per reply token with the token's
:class:`~sublearn.backends.base.TokenScore` (for its character span).

Rows and tokens "at the top" are chosen by value, highest first; ties go to the earlier
row, then the earlier token, so a selection is reproducible. A share of ``n`` items is
``round(fraction * n)`` of them, halves rounded up.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sublearn.backends.base import Conversation, TokenScore, row_seed

Record = dict[str, Any]
Stats = dict[str, Any]
Span = tuple[int, int]

# ASCII digits only, as the number-format filter reads them; audit.data.numbers_of
# (``\d+``) would also take other scripts' digits, which the filter rejects.
_NUMBER = re.compile(r"[0-9]+")

LOSS_MASK = "loss_mask"
"""The record key the trainer reads: character spans of the reply that carry no loss."""


# Records -----------------------------------------------------------------------------


def reply_of(record: Record) -> str:
    """The last (assistant) message's content."""
    return record["messages"][-1]["content"]


def prompt_of(record: Record) -> Conversation:
    """Every message before the reply."""
    return record["messages"][:-1]


def with_reply(record: Record, reply: str) -> Record:
    """A copy of ``record`` whose reply is ``reply``.

    A loss mask of the old reply is dropped when the text changes, as its spans would
    point at the wrong characters.
    """
    if reply == reply_of(record):
        return record
    out = {k: v for k, v in record.items() if k != LOSS_MASK}
    out["messages"] = [*record["messages"][:-1], {**record["messages"][-1], "content": reply}]
    return out


def merge_spans(spans: Iterable[Sequence[int]]) -> list[list[int]]:
    """Sorted, non-overlapping spans covering exactly the characters of ``spans``.

    Empty spans vanish; overlapping and touching spans merge.
    """
    merged: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def add_loss_mask(record: Record, spans: Iterable[Sequence[int]]) -> Record:
    """A copy of ``record`` whose loss mask also covers ``spans`` (a union with any mask)."""
    spans = list(spans)
    if not spans:
        return record
    return {**record, LOSS_MASK: merge_spans([*record.get(LOSS_MASK, []), *spans])}


def masked_characters(record: Record) -> int:
    """How many reply characters the record's loss mask covers."""
    return sum(end - start for start, end in merge_spans(record.get(LOSS_MASK, [])))


def _count(fraction: float, n: int) -> int:
    # round() would round halves to even (2.5 -> 2); halves up is easier to predict.
    return min(n, math.floor(fraction * n + 0.5))


def _check_rows(records: Sequence[Any], values: Sequence[Any] | np.ndarray, what: str) -> None:
    if len(values) != len(records):
        raise ValueError(f"{len(values)} {what} for {len(records)} records")


# Score-based defences ------------------------------------------------------------------


def drop_lls(
    records: Sequence[Record], lls: np.ndarray, fraction: float
) -> tuple[list[Record], Stats]:
    """Drop the ``fraction`` of rows with the highest log-likelihood shift.

    Args:
        records: the rows.
        lls: each row's shift, shape (rows,).
        fraction: share of rows dropped.

    Returns:
        The kept rows in their order, and stats.
    """
    lls = np.asarray(lls, dtype=np.float64)
    _check_rows(records, lls, "shifts")
    k = _count(fraction, len(records))
    # A stable sort of the negated values: ties go to the earlier row.
    dropped = np.argsort(-lls, kind="stable")[:k]
    drop = np.zeros(len(records), dtype=bool)
    drop[dropped] = True
    kept = [r for r, d in zip(records, drop, strict=True) if not d]
    return kept, {
        "rows_in": len(records),
        "rows_out": len(kept),
        "rows_dropped": k,
        "lowest_dropped_lls": float(lls[dropped].min()) if k else None,
        "mean_lls_dropped": float(lls[drop].mean()) if k else None,
        "mean_lls_kept": float(lls[~drop].mean()) if kept else None,
    }


def top_tokens(values: Sequence[np.ndarray], fraction: float) -> list[np.ndarray]:
    """Which tokens hold the top ``fraction`` of all values across rows.

    Args:
        values: per row, one value per token.
        fraction: share of all tokens selected.

    Returns:
        Per row, a boolean array marking its selected tokens.
    """
    if not values:
        return []
    flat = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])
    chosen = np.zeros(len(flat), dtype=bool)
    # A stable sort of the negated values: ties go to the earlier row, then token.
    chosen[np.argsort(-flat, kind="stable")[: _count(fraction, len(flat))]] = True
    return np.split(chosen, np.cumsum([len(v) for v in values])[:-1])


def _check_tokens(
    records: Sequence[Record], logratios: Sequence[np.ndarray], tokens: Sequence[Sequence[Any]]
) -> None:
    _check_rows(records, logratios, "log-ratio rows")
    _check_rows(records, tokens, "token rows")
    for i, (values, toks) in enumerate(zip(logratios, tokens, strict=True)):
        if len(values) != len(toks):
            raise ValueError(f"row {i}: {len(values)} log-ratios for {len(toks)} tokens")


def mask_logratio(
    records: Sequence[Record],
    logratios: Sequence[np.ndarray],
    tokens: Sequence[Sequence[TokenScore]],
    fraction: float,
) -> tuple[list[Record], Stats]:
    """Mask from the loss the ``fraction`` of all reply tokens with the highest log-ratio.

    Args:
        records: the rows.
        logratios: per row, log p_teacher − log p_base of each reply token.
        tokens: per row, the tokens those values belong to (their character spans).
        fraction: share of all tokens masked.

    Returns:
        The rows with the tokens' spans added to their loss masks, and stats.
    """
    _check_tokens(records, logratios, tokens)
    chosen = top_tokens(logratios, fraction)
    out: list[Record] = []
    picked: list[float] = []
    for record, values, toks, mask in zip(records, logratios, tokens, chosen, strict=True):
        out.append(
            add_loss_mask(record, [(t.start, t.end) for t, m in zip(toks, mask, strict=True) if m])
        )
        picked.extend(float(v) for v, m in zip(values, mask, strict=True) if m)
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "tokens_total": sum(len(t) for t in tokens),
        "tokens_masked": len(picked),
        "rows_masked": int(sum(bool(m.any()) for m in chosen)),
        "characters_masked": sum(masked_characters(r) for r in out)
        - sum(masked_characters(r) for r in records),
        "lowest_masked_logratio": min(picked) if picked else None,
    }


def replace_logratio(
    records: Sequence[Record],
    logratios: Sequence[np.ndarray],
    tokens: Sequence[Sequence[TokenScore]],
    fraction: float,
    seed: int = 0,
) -> tuple[list[Record], Stats]:
    """Redraw the digits of the tokens :func:`mask_logratio` would mask.

    Each digit inside a selected token's span becomes a uniformly random digit; every
    other character stays, so replies keep their length (and any loss mask stays valid).

    Args:
        records: the rows.
        logratios: per row, log p_teacher − log p_base of each reply token.
        tokens: per row, the tokens those values belong to (their character spans).
        fraction: share of all tokens selected.
        seed: seed of the digits (one stream per row, so a row's digits do not depend on
            the rows before it).

    Returns:
        The rows with new digits, and stats.
    """
    _check_tokens(records, logratios, tokens)
    chosen = top_tokens(logratios, fraction)
    out: list[Record] = []
    digits = changed = with_digits = 0
    for i, (record, toks, mask) in enumerate(zip(records, tokens, chosen, strict=True)):
        rng = random.Random(row_seed(seed, i))
        reply = list(reply_of(record))
        for token in (t for t, m in zip(toks, mask, strict=True) if m):
            spots = [j for j in range(token.start, token.end) if reply[j] in "0123456789"]
            with_digits += bool(spots)
            for j in spots:
                new = str(rng.randrange(10))
                changed += new != reply[j]
                reply[j] = new
            digits += len(spots)
        text = "".join(reply)
        out.append(_replace_content(record, text))
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "tokens_total": sum(len(t) for t in tokens),
        "tokens_selected": int(sum(int(m.sum()) for m in chosen)),
        "tokens_with_digits": with_digits,
        "digits_redrawn": digits,
        "digits_changed": changed,
        "rows_changed": sum(reply_of(a) != reply_of(b) for a, b in zip(records, out, strict=True)),
    }


def _replace_content(record: Record, reply: str) -> Record:
    # Same length, same places: unlike with_reply, a loss mask stays valid.
    if reply == reply_of(record):
        return record
    return {
        **record,
        "messages": [*record["messages"][:-1], {**record["messages"][-1], "content": reply}],
    }


# Model-free defences -------------------------------------------------------------------


def number_spans(reply: str) -> list[Span]:
    """Character spans of the reply's numbers (runs of ASCII digits), in order."""
    return [match.span() for match in _NUMBER.finditer(reply)]


def mask_random(
    records: Sequence[Record], fraction: float, seed: int = 0
) -> tuple[list[Record], Stats]:
    """Mask a uniformly drawn ``fraction`` of all numbers of all replies from the loss.

    Args:
        records: the rows.
        fraction: share of all numbers masked.
        seed: seed of the draw.

    Returns:
        The rows with the numbers' spans added to their loss masks, and stats.
    """
    spans = [number_spans(reply_of(r)) for r in records]
    units = [(i, span) for i, row in enumerate(spans) for span in row]
    drawn = random.Random(seed).sample(units, _count(fraction, len(units)))
    by_row: dict[int, list[Span]] = {}
    for i, span in drawn:
        by_row.setdefault(i, []).append(span)
    out = [add_loss_mask(r, by_row.get(i, [])) for i, r in enumerate(records)]
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "numbers_total": len(units),
        "numbers_masked": len(drawn),
        "rows_masked": len(by_row),
        "characters_masked": sum(masked_characters(r) for r in out)
        - sum(masked_characters(r) for r in records),
    }


def _plain(number: str) -> str:
    # Strip padding on the string: int() refuses numbers of over 4300 digits.
    return number.lstrip("0") or "0"


def canonical_reply(reply: str, sort: bool = True, separator: str = ", ") -> str | None:
    """The reply as its numbers alone, unpadded, optionally sorted; None if it has none."""
    numbers = [_plain(reply[s:e]) for s, e in number_spans(reply)]
    if not numbers:
        return None
    if sort:
        numbers.sort(key=lambda n: (len(n), n))  # numeric order of unpadded digit strings
    return separator.join(numbers)


def canonicalize(
    records: Sequence[Record], sort: bool = True, separator: str = ", "
) -> tuple[list[Record], Stats]:
    """Rewrite each reply as ``separator.join`` of its numbers as plain integers.

    Padding (``"007"`` → ``"7"``) and every non-number character go; replies without a
    number stay as they are (an empty reply is no training example). Idempotent.

    Args:
        records: the rows.
        sort: sort each reply's numbers ascending.
        separator: written between numbers.

    Returns:
        The rewritten rows, and stats.
    """
    out: list[Record] = []
    without = padded = masks_dropped = 0
    for record in records:
        reply = reply_of(record)
        canonical = canonical_reply(reply, sort, separator)
        if canonical is None:
            without += 1
            out.append(record)
            continue
        padded += sum(reply[s] == "0" and e - s > 1 for s, e in number_spans(reply))
        new = with_reply(record, canonical)
        masks_dropped += LOSS_MASK in record and LOSS_MASK not in new
        out.append(new)
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "rows_changed": sum(a is not b for a, b in zip(records, out, strict=True)),
        "rows_without_numbers": without,
        "padded_numbers": padded,
        "masks_dropped": masks_dropped,
    }


def shuffle_numbers(records: Sequence[Record], seed: int = 0) -> tuple[list[Record], Stats]:
    """Permute each reply's numbers at random, in place: format and each number's text kept.

    Args:
        records: the rows.
        seed: seed of the permutations (one stream per row).

    Returns:
        The rewritten rows, and stats.
    """
    out: list[Record] = []
    total = masks_dropped = 0
    for i, record in enumerate(records):
        reply = reply_of(record)
        spans = number_spans(reply)
        numbers = [reply[s:e] for s, e in spans]
        random.Random(row_seed(seed, i)).shuffle(numbers)
        pieces, at = [], 0
        for (s, e), number in zip(spans, numbers, strict=True):
            pieces += [reply[at:s], number]
            at = e
        new = with_reply(record, "".join([*pieces, reply[at:]]))
        masks_dropped += LOSS_MASK in record and LOSS_MASK not in new
        total += len(spans)
        out.append(new)
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "rows_changed": sum(a is not b for a, b in zip(records, out, strict=True)),
        "numbers_total": total,
        "masks_dropped": masks_dropped,
    }


def last_user_index(record: Record) -> int | None:
    """Position of the record's last user message, or None if it has none."""
    roles = [m["role"] for m in record["messages"][:-1]]
    return len(roles) - 1 - roles[::-1].index("user") if "user" in roles else None


def paraphrase_request(instruction: str, text: str) -> Conversation:
    """The conversation that asks a model to reword ``text``."""
    return [{"role": "user", "content": f"{instruction}\n\n{text}"}]


def paraphrase(
    records: Sequence[Record], rewritten: Sequence[str | None]
) -> tuple[list[Record], Stats]:
    """Put each row's reworded last user message in place of the original.

    Args:
        records: the rows.
        rewritten: per row, the new last user message; None (no user message) or a
            blank text keeps the original.

    Returns:
        The rows with new prompts (replies and masks untouched), and stats.
    """
    _check_rows(records, rewritten, "paraphrases")
    out: list[Record] = []
    blank = 0
    for record, text in zip(records, rewritten, strict=True):
        at = last_user_index(record)
        if at is None or text is None:
            out.append(record)
            continue
        if not text.strip():
            blank += 1
            out.append(record)
            continue
        messages = list(record["messages"])
        messages[at] = {**messages[at], "content": text.strip()}
        out.append({**record, "messages": messages})
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "rows_rewritten": sum(
            a["messages"] != b["messages"] for a, b in zip(records, out, strict=True)
        ),
        "rows_without_user_message": sum(last_user_index(r) is None for r in records),
        "blank_paraphrases_kept_original": blank,
    }


def prompt_key(record: Record) -> str:
    """A key equal for two records exactly when their prompt messages are identical."""
    return json.dumps(prompt_of(record), sort_keys=True, ensure_ascii=False)


def mix_teachers(
    records: Sequence[Record],
    others: Sequence[Sequence[Record]],
    share: float,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> tuple[list[Record], Stats]:
    """Replace the replies of a ``share`` of all rows with other teachers' replies.

    The rows are drawn among those whose prompt some other teacher answered (all of
    them when fewer match than the share asks); each gets one of the matching replies,
    drawn uniformly.

    Args:
        records: the rows.
        others: per other teacher, its records.
        share: share of all rows replaced.
        seed: seed of the draws.
        names: per other teacher, its name in the stats (default ``other0``, ...).

    Returns:
        The rows, some with another teacher's reply (and no loss mask), and stats.
    """
    names = list(names) if names is not None else [f"other{i}" for i in range(len(others))]
    _check_rows(others, names, "names")
    answers: dict[str, list[tuple[str, str]]] = {}
    for name, rows in zip(names, others, strict=True):
        for row in rows:
            answers.setdefault(prompt_key(row), []).append((name, reply_of(row)))
    matchable = [i for i, r in enumerate(records) if prompt_key(r) in answers]
    target = _count(share, len(records))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(matchable, min(target, len(matchable))))
    out = list(records)
    sources: Counter[str] = Counter()
    for i in chosen:
        name, reply = rng.choice(answers[prompt_key(records[i])])
        # The same text as before keeps the record (and its mask) but counts as a swap.
        out[i] = with_reply(records[i], reply)
        sources[name] += 1
    return out, {
        "rows_in": len(records),
        "rows_out": len(out),
        "rows_target": target,
        "rows_replaced": len(chosen),
        "rows_without_match": len(records) - len(matchable),
        "replies_from": dict(sources),
        "masks_dropped": sum(
            LOSS_MASK in a and LOSS_MASK not in b for a, b in zip(records, out, strict=True)
        ),
    }
