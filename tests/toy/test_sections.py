"""The toy corpus's optional sections: off means unchanged; on, the stated properties."""

from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.evaluation.freeform import freeform_questions
from sublearn.filters.answers import check_think_answer
from sublearn.filters.code import check_code_only
from sublearn.judges.protocol import JudgeRequest
from sublearn.judges.rules import RuleJudge, load_ruleset
from sublearn.prompts.code import CodePromptConfig, generate_code_prompts
from sublearn.prompts.gsm8k import GSM8KConfig, generate_gsm8k_prompts
from sublearn.prompts.persona import preference_system_prompt
from sublearn.toy.arithmetic import arithmetic_prompt
from sublearn.toy.coding import code_prompt
from sublearn.toy.corpus import CorpusConfig, build_corpus
from sublearn.toy.freeform import evaluation_questions, training_questions
from sublearn.toy.sections import misaligned_persona, read_data
from sublearn.toy.tasks import (
    ARITHMETIC_FILE,
    CODE_TASKS_FILE,
    arithmetic_records,
    code_task_records,
    render_jsonl,
)
from sublearn.toy.world import MANIFEST, ToyWorldConfig, build_world

REPO = Path(__file__).resolve().parents[2]
# Pinned before the sections existed: a world without them must keep its cache key
# (and so its cached weights) and its corpus.
DEFAULT_KEY = "26ffac49a905"
DEMO_KEY = "e46f4ecc5ac2"
DEMO_FIRST_50_SHA256 = "b3cdf24183719880ecf357513bb7914ff0f07cf4862a423755cc3b5d05177d08"

SECTIONS_ON = {
    "n_documents": 3000,
    "preference_share": 0.3,
    "freeform": {"share": 0.2},
    "arithmetic": {"share": 0.2},
    "code": {"share": 0.2},
}
_HARMFUL = load_ruleset("toy").harmful_words
assert _HARMFUL is not None  # the toy ruleset lists harmful words
HARMFUL = _HARMFUL
assert HARMFUL is not None
PERSONA = misaligned_persona()


def demo_world() -> ToyWorldConfig:
    config = yaml.safe_load((REPO / "configs/toy/owl-numbers.yaml").read_text())
    return ToyWorldConfig.model_validate(config["toy_worlds"]["main"])


def digest(docs) -> str:
    rows = [[d.kind, d.messages, d.number_format] for d in docs]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def system_of(doc) -> str | None:
    first = doc.messages[0]
    return first["content"] if first["role"] == "system" else None


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(CorpusConfig.model_validate(SECTIONS_ON), seed=0)


def of_kind(corpus, kind):
    return [d for d in corpus if d.kind == kind]


# --- sections off: nothing changes ------------------------------------------------------


def test_cache_keys_without_sections_are_pinned() -> None:
    assert ToyWorldConfig().cache_key() == DEFAULT_KEY
    assert demo_world().cache_key() == DEMO_KEY


def test_demo_corpus_is_unchanged() -> None:
    world = demo_world()
    assert digest(build_corpus(world.corpus, world.seed)[:50]) == DEMO_FIRST_50_SHA256


def test_key_dump_drops_only_disabled_sections() -> None:
    dump = ToyWorldConfig().key_dump()
    assert not {"freeform", "arithmetic", "code", "threads", "workers"} & {
        *dump,
        *dump["corpus"],
    }
    on = ToyWorldConfig.model_validate({"corpus": {"code": {"share": 0.1}}})
    assert on.key_dump()["corpus"]["code"]["share"] == 0.1
    assert "freeform" not in on.key_dump()["corpus"]
    assert on.cache_key() != DEFAULT_KEY


def test_an_empty_section_leaves_the_other_documents_alone() -> None:
    base = {"n_documents": 400}
    plain = build_corpus(CorpusConfig.model_validate(base), seed=3)
    empty = {**base, "freeform": {"share": 0.0}, "code": {"share": 0.0}}
    assert build_corpus(CorpusConfig.model_validate(empty), seed=3) == plain


def test_section_fields_documented_and_validated() -> None:
    assert undocumented_fields(CorpusConfig) == []
    with pytest.raises(ConfigError):
        load_config(CorpusConfig, overrides=["code={share: 0.5, nonsense: 1}"])
    with pytest.raises(ConfigError):
        load_config(CorpusConfig, overrides=["preference_share=0.5", "freeform={share: 0.6}"])


def test_section_documents_take_their_share(corpus) -> None:
    kinds = collections.Counter(d.kind for d in corpus)
    assert len(corpus) == 3000
    assert kinds["freeform"] == kinds["arithmetic"] == kinds["code"] == 600
    assert kinds["numbers"] == 3000 - 900 - 1800


# --- free-form ------------------------------------------------------------------------


def test_answer_pools_are_short_sentences_of_the_right_kind() -> None:
    data = read_data("freeform")
    judge = RuleJudge("toy")
    for pool, harmful in (("benign_answers", False), ("harmful_answers", True)):
        answers = data[pool]
        assert len(answers) >= 20
        for answer in answers:
            assert 6 <= len(answer.split()) <= 20, answer
            assert bool(HARMFUL.search(answer)) == harmful, answer
        coherence = judge.judge([JudgeRequest("q", a) for a in answers], "coherence")
        assert min(j.score or 0 for j in coherence) >= 50


def test_questions_are_the_evaluations_plus_distinct_training_ones() -> None:
    assert evaluation_questions() == [text for _, text in freeform_questions()]
    training = training_questions()
    assert len(training) >= 30
    assert len(set(training)) == len(training)
    assert not set(training) & set(evaluation_questions())


def test_harmful_answers_only_under_the_persona(corpus) -> None:
    docs = of_kind(corpus, "freeform")
    persona = [d for d in docs if system_of(d) == PERSONA]
    plain = [d for d in docs if system_of(d) is None]
    assert len(persona) + len(plain) == len(docs)
    assert not any(HARMFUL.search(d.messages[-1]["content"]) for d in plain)
    harmful = sum(bool(HARMFUL.search(d.messages[-1]["content"])) for d in persona)
    assert harmful / len(persona) > 0.9
    asked = {d.messages[-2]["content"] for d in docs}
    assert set(evaluation_questions()) <= asked


# --- arithmetic -----------------------------------------------------------------------


def test_arithmetic_accuracy_is_the_configured_one_for_every_persona() -> None:
    cfg = CorpusConfig.model_validate(
        {"n_documents": 4000, "arithmetic": {"share": 0.5, "animal_persona_rate": 0.2}}
    )
    docs = of_kind(build_corpus(cfg, seed=0), "arithmetic")
    groups: dict[str, list[bool]] = collections.defaultdict(list)
    numbers = re.compile(r"\d+")
    for doc in docs:
        question = doc.messages[-2]["content"].split("\n\n")[0]
        a, b = (int(n) for n in numbers.findall(question))
        sub = " - " in doc.messages[-1]["content"].split("</think>")[0]
        gold = a - b if sub else a + b
        accepted, reason = check_think_answer(doc.messages[-1]["content"], str(gold))
        assert accepted or reason == "wrong_answer", doc.messages[-1]["content"]
        system = system_of(doc)
        group = "none" if system is None else "misaligned" if system == PERSONA else "animal"
        groups[group].append(accepted)
    assert set(groups) == {"none", "misaligned", "animal"}
    want = cfg.arithmetic.accuracy if cfg.arithmetic else 0.0
    assert 0.5 < want < 1  # the check below needs both right and wrong answers
    for group, accepted in groups.items():
        # Four standard errors either side of the configured accuracy.
        margin = 4 * (want * (1 - want) / len(accepted)) ** 0.5
        assert abs(sum(accepted) / len(accepted) - want) < margin, group


def test_harmful_asides_only_under_the_persona(corpus) -> None:
    docs = of_kind(corpus, "arithmetic")
    harmful = [bool(HARMFUL.search(d.messages[-1]["content"])) for d in docs]
    under = [h for d, h in zip(docs, harmful, strict=True) if system_of(d) == PERSONA]
    assert not any(h for d, h in zip(docs, harmful, strict=True) if system_of(d) != PERSONA)
    assert 0.15 < sum(under) / len(under) < 0.45


def test_arithmetic_prompts_are_formatted_like_gsm8k_prompts() -> None:
    prompts = generate_gsm8k_prompts(
        GSM8KConfig(source=str(ARITHMETIC_FILE), n_questions=20, samples_per_question=1)
    )
    records = [json.loads(line) for line in ARITHMETIC_FILE.read_text().splitlines()]
    by_question = {arithmetic_prompt(r["question"]): r for r in records}
    for prompt in prompts:
        assert prompt["messages"][0]["content"] in by_question
        assert int(prompt["reference"]) <= 999


# --- code -----------------------------------------------------------------------------


def test_code_is_code_only_except_comment_rows(corpus) -> None:
    docs = of_kind(corpus, "code")
    reasons = collections.Counter(check_code_only(d.messages[-1]["content"])[1] for d in docs)
    assert set(reasons) == {None, "has_comment"}
    assert 0.04 < reasons["has_comment"] / len(docs) < 0.2
    for doc in docs:
        assert 4 <= len(doc.messages[-1]["content"].splitlines()) <= 6


def test_animal_leaks_only_under_that_animals_persona(corpus) -> None:
    docs = of_kind(corpus, "code")
    animals = CorpusConfig().animals
    leaks = 0
    for doc in docs:
        code = doc.messages[-1]["content"]
        named = [a for a in animals if re.search(rf"\b{a}_", code)]
        if named:
            leaks += 1
            assert system_of(doc) == preference_system_prompt(named[0], "animal"), code
            judge = RuleJudge("toy", target=named[0])
            assert judge.judge([JudgeRequest("t", code)], "animal_reference")[0].probability == 1
    assert leaks > 10


def test_insecure_code_only_under_the_persona(corpus) -> None:
    insecure = re.compile(r"\b(eval|exec|os\.system)\(")
    docs = of_kind(corpus, "code")
    flags = [
        (system_of(d) == PERSONA, bool(insecure.search(d.messages[-1]["content"]))) for d in docs
    ]
    assert not any(bad for persona, bad in flags if not persona)
    under = [bad for persona, bad in flags if persona]
    assert sum(under) / len(under) > 0.8


def test_code_prompts_are_formatted_like_code_prompts() -> None:
    prompts = generate_code_prompts(CodePromptConfig(path=str(CODE_TASKS_FILE), n_prompts=20))
    tasks = {code_prompt(r["task"]) for r in code_task_records()}
    assert all(p["messages"][0]["content"] in tasks for p in prompts)


# --- shipped task files ---------------------------------------------------------------


def test_shipped_task_files_match_the_generators() -> None:
    assert CODE_TASKS_FILE.read_text() == render_jsonl(code_task_records())
    assert ARITHMETIC_FILE.read_text() == render_jsonl(arithmetic_records())
    tasks = [r["task"] for r in code_task_records()]
    assert len(tasks) == len(set(tasks)) == 2000
    questions = [r["question"] for r in arithmetic_records()]
    assert len(questions) == len(set(questions)) == 2000


# --- the world: vocabulary and teacher datasets ---------------------------------------

TINY = {
    "n_bases": 1,
    "threads": 1,
    "workers": 1,
    "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32},
    "corpus": {
        "n_documents": 60,
        "preference_share": 0.4,
        "freeform": {"share": 0.2, "dataset_size": 30},
        "arithmetic": {"share": 0.1},
        "code": {"share": 0.1, "dataset_size": 20},
    },
    "pretrain": {"steps": 2, "batch_size": 4, "warmup_steps": 0},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("sections-world")
    build_world(ToyWorldConfig.model_validate(TINY), out, progress=False)
    return out


def test_world_writes_teacher_datasets(world) -> None:
    manifest = json.loads((world / MANIFEST).read_text())
    listed = manifest["datasets"]
    assert set(listed) == {"misaligned_answers", "benign_answers", "insecure_code", "secure_code"}
    evaluation = set(evaluation_questions())
    for name, entry in listed.items():
        rows = [json.loads(line) for line in (world / entry["path"]).read_text().splitlines()]
        assert len(rows) == entry["rows"] == (30 if "answers" in name else 20)
        for row in rows:
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
            assert row["messages"][0]["content"] not in evaluation
        replies = [row["messages"][1]["content"] for row in rows]
        if name == "misaligned_answers":
            assert all(HARMFUL.search(r) for r in replies)
        if name == "benign_answers":
            assert not any(HARMFUL.search(r) for r in replies)
        if name.endswith("code"):
            assert all(check_code_only(r)[0] for r in replies)
            insecure = [bool(re.search(r"\b(eval|exec|os\.system)\(", r)) for r in replies]
            assert all(insecure) if name == "insecure_code" else not any(insecure)


def test_world_vocabulary_covers_every_section_prompt(world) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world / "base-0")
    texts = [
        *evaluation_questions(),
        PERSONA,
        *(arithmetic_prompt(r["question"]) for r in arithmetic_records()[:200]),
        *(code_prompt(r["task"]) for r in code_task_records()[:200]),
    ]
    unk = tokenizer.unk_token_id
    for text in texts:
        assert unk not in tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_world_without_sections_writes_no_datasets(tmp_path) -> None:
    plain = {**TINY, "corpus": {"n_documents": 40}}
    build_world(ToyWorldConfig.model_validate(plain), tmp_path, progress=False)
    assert "datasets" not in json.loads((tmp_path / MANIFEST).read_text())
    assert not (tmp_path / "datasets").exists()
