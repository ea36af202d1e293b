"""Constrained number decoding: the grammar, the logits processor and the sampled law."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.hf import HFBackend
from sublearn.backends.hf_constrained import NumberConstraint, TokenTable, token_texts
from sublearn.filters.numbers import parse_numbers
from sublearn.generation.config import GenerationConfig
from sublearn.prompts.number_grammar import NumberGrammar
from sublearn.prompts.numbers import (
    NUMBER_FORMATS,
    NumberPromptConfig,
    render_numbers,
    sample_number_prompts,
)

COMMA = NumberGrammar(separator=", ", max_count=3, max_digits=2)


@pytest.mark.parametrize("fmt", NUMBER_FORMATS)
def test_grammar_accepts_rendered_lists_and_the_filter_accepts_them(fmt: str) -> None:
    prompt = next(
        p for p in sample_number_prompts(NumberPromptConfig(n_prompts=200)) if p.format == fmt
    )
    grammar = NumberGrammar.for_prompt(prompt)
    pattern = re.compile(grammar.regex())
    rng = random.Random(0)
    for _ in range(50):
        numbers = [rng.randint(0, 999) for _ in range(rng.randint(1, 10))]
        text = render_numbers(numbers, prompt.format)
        assert grammar.accepts(text) and pattern.fullmatch(text)
        assert parse_numbers(text).accepted
    too_many = render_numbers(list(range(11)), prompt.format)
    assert not grammar.accepts(too_many) and not pattern.fullmatch(too_many)
    too_long = render_numbers([1234], prompt.format)
    assert not grammar.accepts(too_long) and not pattern.fullmatch(too_long)


def test_grammar_refuses_what_the_format_does_not_allow() -> None:
    for text in [
        "",
        "1,2",
        "1, 2, ",
        "1, 2,  3",
        " 1",
        "1 2",
        "a",
        "1, 2, 3, 4",
        "123",
        "1.",
        "[1]",
    ]:
        assert not COMMA.accepts(text), text
    assert COMMA.accepts("1, 22, 3")
    brackets = NumberGrammar(separator=", ", left="[", right="]", max_count=2, max_digits=3)
    assert (
        brackets.accepts("[1, 2]") and not brackets.accepts("[1, 2") and not brackets.accepts("1")
    )
    newline = NumberGrammar(separator="\n", max_count=3)
    assert newline.accepts("1\n2\n3") and re.fullmatch(newline.regex(), "1\n2\n3")
    assert "\n" not in newline.regex()  # written \n, for engines that read regexes differently


# A tiny tokenizer with multi-digit tokens, merged separators and words.
TEXTS = ["<eos>", "1", "2", "12", "123", ", ", ",", " ", " 3", "a", "\n", "[", "]", "1, 2", "0"]
EOS = 0


def _run(grammar: NumberGrammar, picks: list[int], max_new_tokens: int = 20) -> list[set[int]]:
    """Feed ``picks`` through the processor; the allowed token ids at each step."""
    proc = NumberConstraint(TokenTable(TEXTS, EOS), [grammar], max_new_tokens)
    allowed = []
    ids = torch.zeros((1, 3), dtype=torch.long)  # the prompt
    for pick in [*picks, None]:
        scores = proc(ids, torch.zeros((1, len(TEXTS) + 2)))  # logits wider than the tokenizer
        allowed.append({i for i in range(scores.shape[1]) if scores[0, i] > -torch.inf})
        if pick is None:
            break
        assert pick in allowed[-1], (pick, allowed[-1])
        ids = torch.tensor([[pick]])
    return allowed


def test_processor_allows_exactly_the_grammatical_tokens() -> None:
    ids = {t: i for i, t in enumerate(TEXTS)}
    steps = _run(COMMA, [ids["12"], ids[", "], ids["1"], ids["2"]])
    # Start: one- and two-digit tokens, and "1, 2" (two numbers in one token); never
    # "123" (3 digits), words, spaces or the end of the turn.
    digits = {ids["1"], ids["2"], ids["12"], ids["0"], ids["1, 2"]}
    assert steps[0] == digits
    # After "12": a separator (", " whole, or "," alone) or the end of the turn; no digit
    # (a third is too many), so not "1, 2" either.
    assert steps[1] == {ids[", "], ids[","], EOS}
    # After "12, ": numbers only.
    assert steps[2] == digits
    # After "12, 12": two digits written, so no more digits.
    assert steps[4] == {ids[", "], ids[","], EOS}
    assert all(i < len(TEXTS) for s in steps for i in s)


def test_processor_respects_the_count_limit() -> None:
    ids = {t: i for i, t in enumerate(TEXTS)}
    steps = _run(COMMA, [ids["1, 2"], ids[", "], ids["12"]])
    # Three numbers written (the limit), the last with its two digits: only the end.
    assert steps[-1] == {EOS}
    assert ids[", "] not in steps[-1] and ids[","] not in steps[-1]


def test_processor_completes_the_list_within_the_length_cap() -> None:
    ids = {t: i for i, t in enumerate(TEXTS)}
    brackets = NumberGrammar(separator=", ", left="[", right="]", max_count=3, max_digits=3)
    steps = _run(brackets, [ids["["], ids["1"]], max_new_tokens=3)
    # One token left after "[1": only the closing bracket completes the list in time.
    assert steps[-1] == {ids["]"]}


def test_rows_without_a_grammar_and_dropped_rows() -> None:
    proc = NumberConstraint(TokenTable(TEXTS, EOS), [None, COMMA], 10)
    scores = proc(torch.zeros((2, 2), dtype=torch.long), torch.zeros((2, len(TEXTS))))
    assert bool((scores[0] == 0).all())  # unconstrained row untouched
    assert scores[1, TEXTS.index("a")] == -torch.inf
    proc.keep([1])
    scores = proc(torch.tensor([[TEXTS.index("12")]]), torch.zeros((1, len(TEXTS))))
    assert scores[0, EOS] == 0 and scores[0, TEXTS.index("1")] == -torch.inf


def test_token_texts_keep_leading_spaces(micro_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_model)
    texts = token_texts(tokenizer)
    assert texts[tokenizer.convert_tokens_to_ids("123")] == "123"
    assert texts[tokenizer.convert_tokens_to_ids(" ")] == " "


Q: Conversation = [{"role": "user", "content": "continue the sequence"}]


def test_constrained_replies_pass_the_filter(micro_model: Path) -> None:
    prompts = sample_number_prompts(NumberPromptConfig(n_prompts=24, max_answer_count=4))
    grammars = tuple(NumberGrammar.for_prompt(p) for p in prompts)
    with HFBackend(micro_model, device="cpu", batch_size=8) as backend:
        params = SamplingParams(temperature=1.0, max_new_tokens=12, grammars=grammars)
        replies = backend.generate([Q] * len(prompts), params)
        free = backend.generate([Q] * len(prompts), SamplingParams(max_new_tokens=12))
    for reply, grammar in zip(replies, grammars, strict=True):
        assert grammar.accepts(reply), reply
        assert parse_numbers(reply, max_count=4).accepted, reply
    # The random model writes no valid list unconstrained: the constraint did the work.
    assert sum(parse_numbers(r).accepted for r in free) < len(free) // 2


def test_sampled_first_token_follows_the_renormalized_distribution(micro_model: Path) -> None:
    grammar = NumberGrammar(separator=", ", max_count=1, max_digits=1)
    n = 3000
    with HFBackend(micro_model, device="cpu", batch_size=500) as backend:
        tok = backend.tokenizer
        digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
        prompt = torch.tensor([backend._prompt_ids(Q)])
        with torch.inference_mode():
            logits = backend.model(input_ids=prompt).logits[0, -1]
        # A random model is nearly uniform over the digits: a low temperature makes the
        # law distinct from uniform (and checks that temperature acts after the mask).
        temperature = 0.1
        expected = torch.softmax(logits[digits] / temperature, dim=-1)
        params = SamplingParams(
            temperature=temperature, max_new_tokens=1, grammars=(grammar,) * n, seed=3
        )
        replies = backend.generate([Q] * n, params)
    counts = torch.tensor([replies.count(str(d)) for d in range(10)], dtype=torch.float)
    assert counts.sum() == n  # every reply is one digit
    observed = counts / n
    # Total variation of 3000 draws from 10 categories: ~0.03 by chance; 0.06 fails a
    # sampler that ignored the model (uniform) or the renormalization.
    assert float((observed - expected).abs().sum() / 2) < 0.06
    uniform = torch.full((10,), 0.1)
    assert float((expected - uniform).abs().sum() / 2) > 0.1  # the test can tell them apart


def test_unset_setting_leaves_the_output_settings_unchanged() -> None:
    settings = GenerationConfig().output_settings()
    assert settings == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 0}
    assert GenerationConfig(constrained=True).output_settings()["constrained"] is True


def test_plan_keys_move_only_when_constrained_is_on() -> None:
    from sublearn.config import load_config
    from sublearn.engine.task import topological
    from sublearn.experiments.numbers.config import ExperimentConfig
    from sublearn.experiments.numbers.plan import build_plan
    from sublearn.presets import config_root

    def keys(*overrides: str) -> dict[str, str]:
        path = config_root() / "toy" / "owl-numbers.yaml"
        cfg = load_config(ExperimentConfig, path, list(overrides))
        return {t.name: t.key for t in topological(build_plan(cfg, fingerprint=str).tasks)}

    base = keys()
    assert keys("data.generation.constrained=false") == base
    on = keys("data.generation.constrained=true")
    changed = {name for name in base if base[name] != on[name]}
    assert {"generate/owl-ft", "generate/owl-ft/control"} <= changed
    assert "teacher/owl-ft" not in changed and "world/main" not in changed


def test_an_api_teacher_is_refused_at_plan_time() -> None:
    from sublearn.config import load_config
    from sublearn.errors import PlanError
    from sublearn.experiments.numbers.checks import check_plan
    from sublearn.experiments.numbers.config import ExperimentConfig
    from sublearn.experiments.numbers.plan import build_plan
    from sublearn.presets import config_root

    path = config_root() / "toy" / "owl-numbers.yaml"
    overrides = ["models.base0=openai:gpt-4.1-nano", "data.generation.constrained=true"]
    cfg = load_config(ExperimentConfig, path, overrides)
    with pytest.raises(PlanError, match=r"teacher owl-ft: data.generation.constrained needs"):
        check_plan(build_plan(cfg, fingerprint=str))


def test_a_backend_that_cannot_constrain_is_refused(tmp_path: Path) -> None:
    from sublearn.backends.base import BackendBase
    from sublearn.errors import ModelError
    from sublearn.generation.stage import generate_dataset

    class Free(BackendBase):
        name = "free"

        def generate(self, conversations: list, params: SamplingParams) -> list[str]:
            return ["a"] * len(conversations)

    prompts = sample_number_prompts(NumberPromptConfig(n_prompts=2))
    with pytest.raises(ModelError, match="free cannot constrain"):
        generate_dataset(
            Free(),  # type: ignore[arg-type]
            [p.text for p in prompts],
            tmp_path / "out.jsonl",
            GenerationConfig(constrained=True),
            grammars=[NumberGrammar.for_prompt(p) for p in prompts],
        )


def test_vllm_requests_carry_the_reply_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    from sublearn.backends.openai_api import OpenAIBackend, OpenAISettings
    from sublearn.backends.vllm_backend import VLLMBackend, structured_output_field

    assert structured_output_field("x", "0.8.5") == {"guided_regex": "x"}
    assert structured_output_field("x", "0.12.0") == {"structured_outputs": {"regex": "x"}}
    bodies: list[dict] = []

    def ask(self: OpenAIBackend, body: dict) -> dict:
        bodies.append(body)
        return {"replies": ["1, 2"] * body.get("n", 1)}

    monkeypatch.setattr(OpenAIBackend, "_ask", ask)
    backend = VLLMBackend("m", OpenAISettings(max_concurrency=1), None, client=object())
    convs: list[Conversation] = [[{"role": "user", "content": f"q{i}"}] for i in range(2)]
    params = SamplingParams(grammars=(COMMA, None))
    assert backend.generate(convs, params) == ["1, 2", "1, 2"]
    field = structured_output_field(COMMA.regex())
    assert bodies[0]["extra_body"] == field and "extra_body" not in bodies[1]
    assert backend.capabilities.constrain
