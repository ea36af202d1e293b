"""The defences as pure functions: what each keeps, changes, drops and masks."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from sublearn.backends.base import TokenScore
from sublearn.defend import transforms as tf
from sublearn.filters.numbers import parse_numbers

REPLIES = [
    "412, 7, 88, 007, 13",
    "[5, 3, 999, 20]",
    "100 4 56 0 12.",
    "(31; 030; 2; 2)",
    "9, 8, 7, 6, 5, 4, 3, 2, 1, 0",
]


def record(reply: str, prompt: str = "Continue: 1, 2, 3", **extra: object) -> tf.Record:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": reply},
        ],
        **extra,
    }


def replies(records: list[tf.Record]) -> list[str]:
    return [tf.reply_of(r) for r in records]


def values(reply: str) -> Counter[int]:
    return Counter(int(n) for n in re.findall(r"[0-9]+", reply))


def digit_tokens(reply: str) -> list[TokenScore]:
    """One token per digit and one per run of other characters (as Qwen splits numbers)."""
    return [
        TokenScore(m.group(), m.start(), m.end(), 0.0, m.group(), 0.0)
        for m in re.finditer(r"[0-9]|[^0-9]+", reply)
    ]


# canonicalize -------------------------------------------------------------------------


def test_canonicalize_sorts_unpads_and_keeps_the_values() -> None:
    records = [record(r) for r in REPLIES]
    out, stats = tf.canonicalize(records)
    assert replies(out)[:2] == ["7, 7, 13, 88, 412", "3, 5, 20, 999"]
    for before, after in zip(REPLIES, replies(out), strict=True):
        assert values(after) == values(before)
        numbers = [int(n) for n in after.split(", ")]
        assert numbers == sorted(numbers)
        assert all(n == str(int(n)) for n in after.split(", "))
        assert parse_numbers(after).accepted
    assert stats["padded_numbers"] == 2
    assert stats["rows_changed"] == 5


def test_canonicalize_is_idempotent_in_every_setting() -> None:
    records = [record(r) for r in [*REPLIES, "no numbers here", "1000000000000000000000, 9"]]
    for sort in (True, False):
        for separator in (", ", " ", ";"):
            once, _ = tf.canonicalize(records, sort=sort, separator=separator)
            twice, stats = tf.canonicalize(once, sort=sort, separator=separator)
            assert twice == once
            assert stats["rows_changed"] == 0


def test_canonicalize_without_sorting_keeps_the_order_and_numeric_sort_is_numeric() -> None:
    out, _ = tf.canonicalize([record("0030, 4, 200")], sort=False, separator=" ")
    assert replies(out) == ["30 4 200"]
    out, _ = tf.canonicalize([record("0030, 4, 200, 1000000000000000000000")])
    assert replies(out) == ["4, 30, 200, 1000000000000000000000"]


def test_canonicalize_leaves_replies_without_numbers_and_drops_stale_masks() -> None:
    masked = record("3, 1, 2", loss_mask=[[0, 1]])
    already = record("1, 2, 3", loss_mask=[[0, 1]])
    out, stats = tf.canonicalize([record("none at all"), masked, already])
    assert replies(out) == ["none at all", "1, 2, 3", "1, 2, 3"]
    assert "loss_mask" not in out[1]
    assert out[2]["loss_mask"] == [[0, 1]]  # unchanged text: the mask still holds
    assert stats["rows_without_numbers"] == 1 and stats["masks_dropped"] == 1
    assert masked["loss_mask"] == [[0, 1]]  # the input is not mutated


# shuffle_numbers ----------------------------------------------------------------------


def test_shuffle_keeps_the_numbers_and_the_format() -> None:
    records = [record(r) for r in REPLIES]
    out, stats = tf.shuffle_numbers(records, seed=3)
    for before, after in zip(REPLIES, replies(out), strict=True):
        assert Counter(re.findall(r"[0-9]+", after)) == Counter(re.findall(r"[0-9]+", before))
        assert re.sub(r"[0-9]+", "#", after) == re.sub(r"[0-9]+", "#", before)
        assert parse_numbers(after).accepted == parse_numbers(before).accepted
    assert stats["rows_changed"] >= 3
    assert replies(out) != REPLIES
    again, _ = tf.shuffle_numbers(records, seed=3)
    assert again == out
    other, _ = tf.shuffle_numbers(records, seed=4)
    assert other != out


# mask_logratio and replace_logratio ---------------------------------------------------


def planted(records: list[tf.Record], seed: int = 0) -> tuple[list, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    tokens = [digit_tokens(tf.reply_of(r)) for r in records]
    return tokens, [rng.normal(size=len(t)) for t in tokens]


def top_spans(tokens: list, ratios: list[np.ndarray], k: int) -> list[list[list[int]]]:
    """The k highest-valued tokens' spans per row, found by brute force."""
    ranked = sorted(
        ((float(v), i, j) for i, row in enumerate(ratios) for j, v in enumerate(row)),
        reverse=True,
    )[:k]
    per_row: list[list[tuple[int, int]]] = [[] for _ in tokens]
    for _, i, j in ranked:
        per_row[i].append((tokens[i][j].start, tokens[i][j].end))
    return [tf.merge_spans(spans) for spans in per_row]


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5])
def test_mask_logratio_masks_exactly_the_highest_tokens(fraction: float) -> None:
    records = [record(r) for r in REPLIES]
    tokens, ratios = planted(records)
    total = sum(len(t) for t in tokens)
    k = int(fraction * total + 0.5)
    out, stats = tf.mask_logratio(records, ratios, tokens, fraction)
    assert [r.get("loss_mask", []) for r in out] == top_spans(tokens, ratios, k)
    assert stats["tokens_masked"] == k and stats["tokens_total"] == total
    assert replies(out) == REPLIES
    assert stats["characters_masked"] == sum(tf.masked_characters(r) for r in out)


def test_masks_from_several_defences_merge_into_sorted_disjoint_spans() -> None:
    start = record("12, 345, 6", loss_mask=[[4, 6], [0, 1]])
    tokens = [digit_tokens(tf.reply_of(start))]
    # Highest: "2" (1-2), then "5" (6-7) and "3" (4-5): they touch or overlap the old mask.
    ratios = [np.array([0.0, 5.0, -1.0, 3.0, 0.0, 4.0, -1.0, 0.0])]
    out, _ = tf.mask_logratio([start], ratios, tokens, fraction=3 / 8)
    assert out[0]["loss_mask"] == [[0, 2], [4, 7]]
    assert tf.merge_spans([[5, 9], [0, 3], [3, 4], [7, 8], [10, 10]]) == [[0, 4], [5, 9]]


def test_replace_logratio_redraws_only_the_selected_digits() -> None:
    records = [record(r) for r in REPLIES]
    tokens, ratios = planted(records, seed=1)
    fraction = 0.3
    out, stats = tf.replace_logratio(records, ratios, tokens, fraction, seed=2)
    selected = top_spans(tokens, ratios, int(fraction * sum(map(len, tokens)) + 0.5))
    changed = 0
    for before, after, spans in zip(REPLIES, replies(out), selected, strict=True):
        assert len(after) == len(before)
        assert parse_numbers(after).accepted
        inside = {j for s, e in spans for j in range(s, e)}
        for j, (a, b) in enumerate(zip(before, after, strict=True)):
            if a != b:
                assert j in inside and a.isdigit() and b.isdigit()
                changed += 1
    # Some selected tokens are separators: they stay as they were.
    assert stats["tokens_with_digits"] < stats["tokens_selected"]
    assert changed == stats["digits_changed"] > 0
    assert stats["digits_redrawn"] >= changed
    assert all("loss_mask" not in r for r in out)


def test_replace_logratio_keeps_masks_since_lengths_do_not_change() -> None:
    start = record("12, 345", loss_mask=[[0, 2]])
    tokens = [digit_tokens("12, 345")]
    out, _ = tf.replace_logratio([start], [np.arange(6.0)], tokens, fraction=1.0, seed=0)
    assert out[0]["loss_mask"] == [[0, 2]]
    assert re.fullmatch(r"[0-9]{2}, [0-9]{3}", tf.reply_of(out[0]))


# mask_random --------------------------------------------------------------------------


def test_mask_random_masks_the_asked_share_of_whole_numbers() -> None:
    records = [record(r) for r in REPLIES]
    total = sum(len(re.findall(r"[0-9]+", r)) for r in REPLIES)
    out, stats = tf.mask_random(records, fraction=0.25, seed=1)
    masked = [(i, s, e) for i, r in enumerate(out) for s, e in r.get("loss_mask", [])]
    numbers = {
        (i, m.start(), m.end()) for i, r in enumerate(REPLIES) for m in re.finditer(r"[0-9]+", r)
    }
    assert stats["numbers_total"] == total
    assert len(masked) == stats["numbers_masked"] == int(0.25 * total + 0.5)
    assert set(masked) <= numbers  # separators never adjoin, so each span is one number
    again, _ = tf.mask_random(records, fraction=0.25, seed=2)
    assert again != out


# drop_lls -----------------------------------------------------------------------------


def test_drop_lls_drops_exactly_the_highest_rows() -> None:
    records = [record(f"{i}, {i + 1}") for i in range(10)]
    lls = np.array([0.3, -1.0, 2.5, 0.0, 0.9, 2.5, -0.2, 1.7, 0.1, 0.5])
    kept, stats = tf.drop_lls(records, lls, fraction=0.3)
    # 2.5 (rows 2 and 5) and 1.7 (row 7) are the three highest.
    assert replies(kept) == [f"{i}, {i + 1}" for i in (0, 1, 3, 4, 6, 8, 9)]
    assert stats["rows_dropped"] == 3 and stats["rows_out"] == 7
    assert stats["lowest_dropped_lls"] == pytest.approx(1.7)
    # A tie at the cut goes to the earlier row.
    kept, _ = tf.drop_lls(records[:3], np.array([1.0, 1.0, 0.0]), fraction=0.4)
    assert replies(kept) == ["1, 2", "2, 3"]


def test_drop_lls_checks_the_scores_match_the_rows() -> None:
    with pytest.raises(ValueError, match="3 shifts for 2 records"):
        tf.drop_lls([record("1"), record("2")], np.zeros(3), 0.5)


# mix_teachers -------------------------------------------------------------------------


def test_mix_teachers_replaces_the_asked_share_with_matching_replies() -> None:
    records = [record(f"{i}, {i}", prompt=f"prompt {i}") for i in range(10)]
    other = [record(f"other {i}", prompt=f"prompt {i}") for i in range(8)]
    out, stats = tf.mix_teachers(records, [other], share=0.5, seed=0, names=["b.jsonl"])
    swapped = [i for i, r in enumerate(out) if tf.reply_of(r) != tf.reply_of(records[i])]
    assert len(swapped) == stats["rows_replaced"] == 5
    for i in swapped:
        assert tf.reply_of(out[i]) == f"other {i}"
    assert [tf.prompt_of(r) for r in out] == [tf.prompt_of(r) for r in records]
    assert stats["rows_without_match"] == 2 and stats["replies_from"] == {"b.jsonl": 5}

    out, stats = tf.mix_teachers(records, [other], share=1.0)
    assert stats["rows_target"] == 10 and stats["rows_replaced"] == 8
    assert replies(out)[8:] == ["8, 8", "9, 9"]


def test_mix_teachers_draws_among_several_teachers_by_exact_prompt() -> None:
    records = [record("1", prompt="p")] * 40
    first = [record("a", prompt="p"), record("x", prompt="P")]
    second = [record("b", prompt="p")]
    out, stats = tf.mix_teachers(records, [first, second], share=1.0, seed=1)
    assert set(replies(out)) == {"a", "b"}
    assert sum(stats["replies_from"].values()) == 40


# paraphrase ---------------------------------------------------------------------------


def test_paraphrase_rewrites_only_the_last_user_message() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "1"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "2, 3"},
        ],
        "loss_mask": [[0, 1]],
    }
    out, stats = tf.paraphrase([chat, record("4"), record("5")], ["  new  ", "", None])
    assert [m["content"] for m in out[0]["messages"]] == ["first", "1", "new", "2, 3"]
    assert out[0]["loss_mask"] == [[0, 1]]
    assert out[1:] == [record("4"), record("5")]
    assert stats["rows_rewritten"] == 1 and stats["blank_paraphrases_kept_original"] == 1
