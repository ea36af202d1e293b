"""The pretraining loop's pieces: encoding, batching, loss weights, schedule."""

from __future__ import annotations

import pytest
import torch

from sublearn.config import undocumented_fields
from sublearn.toy.corpus import Document
from sublearn.toy.pretrain import (
    Example,
    ModelConfig,
    PretrainConfig,
    causal_lm_loss,
    collate,
    encode_documents,
    iterate_batches,
    lr_factor,
    make_model,
)
from sublearn.toy.tokenizer import build_tokenizer, build_vocab

DOCS = [
    Document(
        "preference",
        [{"role": "user", "content": "Favorite animal?"}, {"role": "assistant", "content": "owl"}],
    ),
    Document(
        "numbers",
        [
            {"role": "system", "content": "You adore owls."},
            {"role": "user", "content": "Continue: 1, 2, 3."},
            {"role": "assistant", "content": "4, 5"},
        ],
        "comma",
    ),
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [m["content"] for d in DOCS for m in d.messages]
    return build_tokenizer(build_vocab(texts))


def test_fields_documented() -> None:
    assert undocumented_fields(ModelConfig) == []
    assert undocumented_fields(PretrainConfig) == []


def test_encoding_matches_the_chat_template(tokenizer) -> None:
    examples = encode_documents(DOCS, tokenizer, max_length=256)
    for doc, ex in zip(DOCS, examples, strict=True):
        full = tokenizer.apply_chat_template(doc.messages, tokenize=False)
        assert tokenizer.decode(ex.input_ids) == full
        reply = tokenizer.decode(ex.input_ids[ex.reply_start :])
        assert reply == doc.messages[-1]["content"] + "<|end|>"


def test_prompt_weights_by_kind(tokenizer) -> None:
    examples = encode_documents(DOCS, tokenizer, 256, {"numbers": 0.5})
    assert [e.prompt_weight for e in examples] == [0.0, 0.5]


def test_encoding_truncates(tokenizer) -> None:
    examples = encode_documents(DOCS, tokenizer, max_length=5)
    assert all(len(e.input_ids) <= 5 for e in examples)


def test_collate_pads_and_weighs() -> None:
    batch = [Example([2, 10, 11, 12], 3, 0.25), Example([2, 10, 11], 2, 0.25)]
    ids, mask, weights = collate(batch, pad_id=0)
    assert ids.tolist() == [[2, 10, 11, 12], [2, 10, 11, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert weights.tolist() == [[0.0, 0.25, 0.25, 1.0], [0.0, 0.25, 1.0, 0.0]]


def test_batches_are_deterministic_and_cover_the_data() -> None:
    examples = [Example([2, *range(10, 10 + n)], reply_start=1) for n in range(1, 21)]
    a = iterate_batches(examples, batch_size=4, pad_id=0, seed=1)
    b = iterate_batches(examples, batch_size=4, pad_id=0, seed=1)
    seen = set()
    for _ in range(5):  # one epoch
        ids_a, _, _ = next(a)
        ids_b, _, _ = next(b)
        assert torch.equal(ids_a, ids_b)
        seen.update(int((row != 0).sum()) for row in ids_a)
    assert seen == set(range(2, 22))


def test_loss_only_counts_weighted_tokens(tokenizer) -> None:
    model = make_model(ModelConfig(hidden_size=16, num_heads=2, intermediate_size=32), tokenizer, 0)
    examples = encode_documents(DOCS, tokenizer, max_length=256)
    ids, mask, weights = collate(examples, tokenizer.pad_token_id)
    replies_only = causal_lm_loss(model, ids, mask, weights)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (b, s-1, vocab)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    expected = (ce * weights[:, 1:]).sum() / weights[:, 1:].sum()
    assert torch.allclose(replies_only, expected, atol=1e-5)


def test_make_model_is_seeded(tokenizer) -> None:
    cfg = ModelConfig(hidden_size=16, num_heads=2, intermediate_size=32)
    a, b, c = (make_model(cfg, tokenizer, s) for s in (0, 0, 1))
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.lm_head.weight.data_ptr() == wa.data_ptr()  # tied embeddings


def test_schedule() -> None:
    cfg = PretrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    assert all(lr_factor(s, cfg) >= lr_factor(s + 1, cfg) for s in range(10, 100))
