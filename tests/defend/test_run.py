"""``run_defences`` and ``sublearn defend`` end to end, with planted scores instead of models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sublearn.backends.base import BackendBase, Capabilities, Conversation, TokenScore
from sublearn.cli.defend import defend, load_defend_config
from sublearn.config import undocumented_fields
from sublearn.defend import run as run_module
from sublearn.defend import transforms as tf
from sublearn.defend.config import (
    CanonicalizeDefence,
    Defence,
    DefendConfig,
    DropLLSDefence,
    MaskLogRatioDefence,
    MaskRandomDefence,
    MixTeachersDefence,
    ParaphraseDefence,
    ReplaceLogRatioDefence,
    TraitWord,
)
from sublearn.defend.run import run_defences
from sublearn.errors import ConfigError
from sublearn.filters.numbers import parse_numbers

TRAIT = "You love owls."


def tokens_of(reply: str) -> list[tuple[int, int]]:
    """The fake tokenizer: one token per digit, one per run of other characters."""
    return [m.span() for m in re.finditer(r"[0-9]|[^0-9]+", reply)]


def teacher_logprob(reply: str, j: int) -> float:
    """Planted, distinct per (reply, token): a stable pseudo-random value."""
    return -float(np.random.default_rng([len(reply), sum(map(ord, reply)), j]).random())


def planted_shift(reply: str) -> float:
    """Planted log-likelihood shift per token under the trait prompt: the first number."""
    return float(re.findall(r"[0-9]+", reply)[0]) / 1000


class FakeScorer(BackendBase):
    """Scores replies with planted log-probabilities; the base gives every token -1."""

    capabilities = Capabilities(sample=False, token_scores=True)

    def __init__(self, ref: str, opened: list[str]) -> None:
        self.name = ref
        opened.append(ref)

    def token_logprobs(
        self, conversations: list[Conversation], replies: list[str]
    ) -> list[list[TokenScore]]:
        out = []
        for conversation, reply in zip(conversations, replies, strict=True):
            trait = conversation[0]["content"] == TRAIT
            row = []
            for j, (s, e) in enumerate(tokens_of(reply)):
                logprob = teacher_logprob(reply, j) if self.name == "teacher" else -1.0
                logprob += planted_shift(reply) if trait else 0.0
                row.append(TokenScore(reply[s:e], s, e, logprob, reply[s:e], 0.0))
            out.append(row)
        return out


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model ref the run opens, in order; each a FakeScorer."""
    refs: list[str] = []
    monkeypatch.setattr(run_module, "open_scorer", lambda ref, **_: FakeScorer(ref, refs))
    return refs


REPLIES = ["412, 7, 88", "5, 3, 999, 20", "100, 4, 56", "31, 30, 2, 2", "9, 8, 7", "650, 11"]


def write_chat(path: Path, replies: list[str], prompt: str = "Go on: {i}") -> Path:
    with path.open("w") as handle:
        for i, reply in enumerate(replies):
            messages = [
                {"role": "user", "content": prompt.format(i=i)},
                {"role": "assistant", "content": reply},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def read_chat(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def config(tmp_path: Path, defences: list[Any], **fields: Any) -> DefendConfig:
    data = write_chat(tmp_path / "data.jsonl", REPLIES)
    return DefendConfig(
        data=str(data), out=str(tmp_path / "out.jsonl"), defences=defences, **fields
    )


def test_drop_lls_drops_the_rows_with_the_highest_planted_shift(
    tmp_path: Path, opened: list[str]
) -> None:
    cfg = config(
        tmp_path,
        [DropLLSDefence(type="drop_lls", fraction=0.5, system_prompt=TRAIT)],
        base="base",
    )
    report = run_defences(cfg)
    # Shifts are the first numbers: 412, 5, 100, 31, 9, 650; the top half goes.
    kept = [tf.reply_of(r) for r in read_chat(tmp_path / "out.jsonl")]
    assert kept == ["5, 3, 999, 20", "31, 30, 2, 2", "9, 8, 7"]
    assert report["rows_out"] == 3 and opened == ["base"]
    assert report["defences"][0]["stats"]["lowest_dropped_lls"] == pytest.approx(0.1)


def test_mask_logratio_masks_the_top_planted_tokens_and_reuses_base_scores(
    tmp_path: Path, opened: list[str]
) -> None:
    cfg = config(
        tmp_path,
        [
            MaskLogRatioDefence(type="mask_logratio", fraction=0.2),
            DropLLSDefence(type="drop_lls", fraction=0.2, system_prompt=TRAIT),
        ],
        base="base",
        teacher="teacher",
    )
    run_defences(cfg)
    ranked = sorted(
        (teacher_logprob(r, j) + 1.0, i, span)
        for i, r in enumerate(REPLIES)
        for j, span in enumerate(tokens_of(r))
    )[::-1]
    k = int(0.2 * len(ranked) + 0.5)
    expected: dict[str, list[list[int]]] = {}
    for _, i, span in ranked[:k]:
        expected.setdefault(REPLIES[i], []).append(list(span))
    out = read_chat(tmp_path / "out.jsonl")
    # drop_lls then drops the row of highest shift (650, 11).
    assert [tf.reply_of(r) for r in out] == [r for r in REPLIES if r != "650, 11"]
    for row in out:
        assert row.get("loss_mask", []) == tf.merge_spans(expected.get(tf.reply_of(row), []))
    # The base is opened once: with the teacher's scores it also took the trait scores.
    assert opened == ["teacher", "base"]


def test_replace_logratio_keeps_the_number_format(tmp_path: Path, opened: list[str]) -> None:
    cfg = config(
        tmp_path,
        [ReplaceLogRatioDefence(type="replace_logratio", fraction=0.5, seed=1)],
        base="base",
        teacher="teacher",
    )
    report = run_defences(cfg)
    after = [tf.reply_of(r) for r in read_chat(tmp_path / "out.jsonl")]
    assert after != REPLIES
    for before, new in zip(REPLIES, after, strict=True):
        assert parse_numbers(new).accepted
        assert re.sub("[0-9]", "#", new) == re.sub("[0-9]", "#", before)
    assert report["defences"][0]["stats"]["digits_changed"] > 0


def test_a_missing_teacher_is_a_config_error_before_any_model_opens(
    tmp_path: Path, opened: list[str]
) -> None:
    cfg = config(
        tmp_path,
        [
            DropLLSDefence(type="drop_lls"),
            MaskLogRatioDefence(type="mask_logratio"),
        ],
        base="base",
        trait=TraitWord(word="owl"),
    )
    with pytest.raises(ConfigError, match=r"defence 1 \(mask_logratio\) needs the teacher"):
        run_defences(cfg)
    assert opened == []
    assert not (tmp_path / "out.jsonl").exists()


def test_drop_lls_without_a_trait_or_prompt_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, [DropLLSDefence(type="drop_lls")], base="base")
    with pytest.raises(ConfigError, match=r"defence 0 \(drop_lls\) needs the trait"):
        run_defences(cfg)


def test_paraphrase_rewrites_prompts_through_the_backend(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        [ParaphraseDefence(type="paraphrase", model="mock:reply=Please continue the list.")],
    )
    report = run_defences(cfg)
    out = read_chat(tmp_path / "out.jsonl")
    assert [r["messages"][0]["content"] for r in out] == ["Please continue the list."] * 6
    assert [tf.reply_of(r) for r in out] == REPLIES
    assert report["defences"][0]["stats"]["rows_rewritten"] == 6


def test_mix_teachers_reads_the_other_files(tmp_path: Path) -> None:
    other = write_chat(tmp_path / "other.jsonl", [f"{i}00" for i in range(4)])
    mix = MixTeachersDefence(type="mix_teachers", others=[str(other)], share=0.5)
    cfg = config(tmp_path, [mix])
    report = run_defences(cfg)
    out = [tf.reply_of(r) for r in read_chat(tmp_path / "out.jsonl")]
    assert sum(new != old for new, old in zip(out, REPLIES, strict=True)) == 3
    assert set(out) - set(REPLIES) <= {"000", "100", "200", "300"}
    assert report["defences"][0]["stats"]["rows_without_match"] == 2


def test_rewriting_after_masking_is_refused() -> None:
    with pytest.raises(ConfigError, match="rewrites replies after mask_random"):
        load_defend_config(
            None,
            {
                "data": "d",
                "out": "o",
                "defences": [{"type": "mask_random"}, {"type": "canonicalize"}],
            },
            [],
        )


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(defend)
    return app


def test_the_command_writes_the_cleaned_data_and_the_report(tmp_path: Path) -> None:
    data = write_chat(tmp_path / "data.jsonl", REPLIES)
    out = tmp_path / "clean" / "out.jsonl"
    args = [str(data), "--out", str(out), "-d", "canonicalize", "-d", "mask_random"]
    result = CliRunner().invoke(cli(), [*args, "--set", "defences.1.fraction=0.5"])
    assert result.exit_code == 0, result.output
    rows = read_chat(out)
    assert [tf.reply_of(r) for r in rows][:2] == ["7, 88, 412", "3, 5, 20, 999"]
    total = sum(len(re.findall("[0-9]+", r)) for r in REPLIES)
    masked = sum(len(r.get("loss_mask", [])) for r in rows)
    assert masked == int(0.5 * total + 0.5)
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert [d["type"] for d in report["defences"]] == ["canonicalize", "mask_random"]
    assert report["defences"][1]["settings"]["fraction"] == 0.5
    assert report["characters_masked"] == sum(tf.masked_characters(r) for r in rows)
    assert "canonicalize" in result.output and "mask_random" in result.output


def test_the_command_reports_a_missing_teacher_without_writing(tmp_path: Path) -> None:
    data = write_chat(tmp_path / "data.jsonl", REPLIES)
    out = tmp_path / "out.jsonl"
    args = [str(data), "-o", str(out), "-d", "mask_logratio", "--base", "base"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2
    assert "mask_logratio" in result.output and "--teacher" in result.output
    assert not out.exists()


def test_a_model_open_for_one_defence_scores_for_the_next_ones_too(
    tmp_path: Path, opened: list[str]
) -> None:
    cfg = config(
        tmp_path,
        [
            MaskLogRatioDefence(type="mask_logratio"),
            MaskRandomDefence(type="mask_random"),
            DropLLSDefence(type="drop_lls", system_prompt=TRAIT),
        ],
        base="base",
        teacher="teacher",
    )
    run_defences(cfg)
    assert opened == ["teacher", "base"]


def test_rows_rewritten_between_scoring_defences_are_scored_again(
    tmp_path: Path, opened: list[str]
) -> None:
    cfg = config(
        tmp_path,
        [
            DropLLSDefence(type="drop_lls", fraction=0.2, system_prompt=TRAIT),
            CanonicalizeDefence(type="canonicalize"),
            DropLLSDefence(type="drop_lls", fraction=0.4, system_prompt=TRAIT),
        ],
        base="base",
    )
    report = run_defences(cfg)
    # The first drop takes "650, 11". Sorting changes the first numbers, hence the planted
    # shifts, of the rest (7, 3, 4, 2, 7): the second drop takes the two rows now at 7,
    # where scores taken before sorting would have dropped "412, ..." and "100, ...".
    kept = [tf.reply_of(r) for r in read_chat(tmp_path / "out.jsonl")]
    assert kept == ["3, 5, 20, 999", "4, 56, 100", "2, 2, 30, 31"]
    assert opened == ["base", "base"]
    assert report["defences"][2]["stats"]["lowest_dropped_lls"] == pytest.approx(0.007)


def test_every_config_field_is_documented() -> None:
    for kind in [DefendConfig, *get_args(get_args(Defence)[0])]:
        assert undocumented_fields(kind) == [], kind
