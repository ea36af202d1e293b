"""The toy tokenizer: lossless, numbers as single tokens, chat template and masks."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts
from sublearn.prompts.persona import preference_system_prompt
from sublearn.prompts.questions import ANIMAL_QUESTIONS
from sublearn.toy.tokenizer import (
    CHAT_TEMPLATE,
    END,
    SPECIAL_TOKENS,
    build_tokenizer,
    build_vocab,
    pretokenize,
    render_chat,
)

PROMPTS = generate_number_prompts(NumberPromptConfig(seed=5, n_prompts=300))
SYSTEM = preference_system_prompt("owl", "animal")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = build_vocab([*PROMPTS, *ANIMAL_QUESTIONS, SYSTEM, "owl", "1, 2; 3\n[4] (5)."])
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer(vocab).save_pretrained(folder)
    # Everything below goes through a save/load round trip, as the pipeline does.
    return AutoTokenizer.from_pretrained(folder)


def conversation(answer: str = "123, 45, 6") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPTS[0]},
        {"role": "assistant", "content": answer},
    ]


def test_vocab_layout() -> None:
    vocab = build_vocab(["Hello, world!"])
    assert vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert {str(n) for n in range(1000)} <= set(vocab)
    assert {"Hello", ",", " ", "world", "!", "\n"} <= set(vocab)
    assert len(vocab) == len(set(vocab))
    assert build_vocab(["b a", "a c"]) == build_vocab(["a c", "b a"])


def test_pretokenize_splits_digits_in_threes() -> None:
    assert pretokenize("abc 1234,5") == ["abc", " ", "123", "4", ",", "5"]
    assert "".join(pretokenize(PROMPTS[1])) == PROMPTS[1]


def test_lossless_round_trip(tokenizer) -> None:
    for text in [*PROMPTS[:100], *ANIMAL_QUESTIONS, SYSTEM, "12 345\n6; [7, 8] (9)."]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text


def test_numbers_are_single_tokens(tokenizer) -> None:
    for n in (0, 7, 42, 100, 999):
        ids = tokenizer(str(n), add_special_tokens=False)["input_ids"]
        assert len(ids) == 1
        assert tokenizer.convert_ids_to_tokens(ids) == [str(n)]


def test_unknown_words_map_to_unk(tokenizer) -> None:
    ids = tokenizer("zyzzyva", add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.unk_token_id]


def test_special_tokens(tokenizer) -> None:
    assert tokenizer.eos_token == END
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1


def test_chat_template_renders(tokenizer) -> None:
    text = tokenizer.apply_chat_template(conversation(), tokenize=False)
    assert text == (
        f"<|bos|><|system|>{SYSTEM}<|end|><|user|>{PROMPTS[0]}<|end|><|assistant|>123, 45, 6<|end|>"
    )
    prompt = tokenizer.apply_chat_template(
        conversation()[:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|end|><|assistant|>")
    assert text.startswith(prompt)
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_python_renderer_matches_template(tokenizer) -> None:
    for conv in (conversation(), conversation()[1:], conversation()[:2]):
        for gen in (False, True):
            expected = tokenizer.apply_chat_template(
                conv, tokenize=False, add_generation_prompt=gen
            )
            assert render_chat(conv, add_generation_prompt=gen) == expected


def test_unknown_role_is_an_error(tokenizer) -> None:
    with pytest.raises(Exception, match="unknown chat role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    with pytest.raises(ValueError, match="unknown chat role"):
        render_chat([{"role": "tool", "content": "x"}])


def test_assistant_mask_covers_exactly_the_reply(tokenizer) -> None:
    out = tokenizer.apply_chat_template(
        conversation(), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    reply = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tokenizer.decode(reply) == "123, 45, 6<|end|>"
    first = mask.index(1)
    assert all(mask[first:])  # the reply is the contiguous tail
    assert tokenizer.convert_ids_to_tokens(ids[first - 1]) == "<|assistant|>"


def test_left_padding(tokenizer) -> None:
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(["owl", "1 2 3"], padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = "right"
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["attention_mask"][0][0] == 0
    assert batch["input_ids"][0][-1] == tokenizer.convert_tokens_to_ids("owl")
