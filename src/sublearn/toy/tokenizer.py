"""A lossless word-level tokenizer for the toy world, with a chat template.

Text is split into digit runs of one to three digits, letter runs, single whitespace
characters and single punctuation characters; every piece is one token. So every
number 0-999 is exactly one token (the unit a number-sequence answer is made of),
and ``decode(encode(s)) == s`` for any text made of known pieces, because the pieces
are glued back together with no spaces added or removed.

The tokenizer is a plain ``tokenizers`` pipeline wrapped in ``PreTrainedTokenizerFast``
and saved with ``save_pretrained``, so the pipeline loads it with ``AutoTokenizer``
like any Hugging Face tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS = "<|bos|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
PAD = "<|pad|>"
UNK = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, SYSTEM, USER, ASSISTANT, END)

# Longer digit runs split into chunks of three from the left ("1234" -> "123", "4").
PRETOKEN_PATTERN = r"\d{1,3}|[A-Za-z]+|\s|[^\sA-Za-z\d]"
_PRETOKEN_RE = re.compile(PRETOKEN_PATTERN)

# One line on purpose: Jinja keeps every newline of the template in the output.
# ``{% generation %}`` marks the assistant's reply (including its <|end|>, which the
# model must learn to emit) for assistant-only losses.
CHAT_TEMPLATE = (
    "<|bos|>"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% elif message['role'] == 'system' or message['role'] == 'user' %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% else %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

MAX_NUMBER = 999
WHITESPACE = (" ", "\n", "\t")


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
    """Render a conversation exactly as :data:`CHAT_TEMPLATE` does, without Jinja.

    Building a corpus renders tens of thousands of conversations; this is ~50x faster
    than ``apply_chat_template`` and a test holds the two to the same output.

    Args:
        messages: chat turns with ``role`` in system/user/assistant and ``content``.
        add_generation_prompt: end with the assistant tag, ready for a reply.
    """
    parts = [BOS]
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant":
            parts.append(f"{ASSISTANT}{content}{END}")
        elif role in ("system", "user"):
            parts.append(f"<|{role}|>{content}{END}")
        else:
            raise ValueError(f"unknown chat role: {role}")
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def pretokenize(text: str) -> list[str]:
    """Split text into the pieces the tokenizer maps to tokens (specials are not handled)."""
    return _PRETOKEN_RE.findall(text)


def build_vocab(texts: Iterable[str]) -> list[str]:
    """The token list: special tokens, every number 0-999, then every piece seen, sorted.

    Args:
        texts: the corpus (and any other text the model should know, e.g. questions).

    Returns:
        Tokens in id order; deterministic for the same set of pieces.
    """
    numbers = [str(n) for n in range(MAX_NUMBER + 1)]
    fixed = set(SPECIAL_TOKENS) | set(numbers)
    seen: set[str] = set(WHITESPACE)
    for text in texts:
        seen.update(pretokenize(text))
    rest = sorted(seen - fixed)
    return [*SPECIAL_TOKENS, *numbers, *rest]


def build_tokenizer(vocab: list[str], model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """Wrap a word-level vocabulary into a Hugging Face fast tokenizer with the chat template.

    Args:
        vocab: tokens in id order, as from :func:`build_vocab`.
        model_max_length: the longest sequence the model accepts.

    Returns:
        The tokenizer; ``eos`` is ``<|end|>``, ``pad`` is ``<|pad|>``, padding on the right
        (set ``padding_side = "left"`` for batched generation).
    """
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"vocabulary lacks special tokens {missing}")
    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
