"""Chat completions' request parsing, token counts and first-position log-probabilities."""

from __future__ import annotations

import math
from typing import Any, cast

from sublearn.backends.base import Conversation, Message
from tests.support.openai_server.protocol import ApiError

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def parse_conversation(messages: Any) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    conversation: Conversation = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ApiError(
                400, f"{where}: role must be system, developer, user or assistant", param=where
            )
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ApiError(400, f"{where}: only text content parts are served", param=where)
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}: content must be a string or text parts", param=where)
        conversation.append(cast(Message, {"role": _ROLES[message["role"]], "content": content}))
    return conversation


def count_tokens(tokenizer: Any, text: str) -> int:
    if not text:
        return 0
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_prompt_tokens(tokenizer: Any, conversation: Conversation) -> int:
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        return sum(len(m["content"].split()) for m in conversation)
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    # As the HF backend builds prompts: the template already holds any BOS token.
    return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def first_position_logprobs(
    backend: Any, conversation: Conversation, replies: list[str], top_k: int
) -> list[dict[str, Any]]:
    """``choices[i].logprobs`` of each reply: its first position only (see module doc)."""
    tokenizer = getattr(backend, "tokenizer", None)
    # Ask for more than shown, so a sampled token is usually found without another pass.
    top = backend.next_token_logprobs([conversation], max(top_k, 20))[0]
    table = dict(reversed(top))  # token text -> log-prob, the highest kept on duplicates
    out = []
    for reply in replies:
        token = _first_token(tokenizer, reply)
        logprob = table.get(token)
        if logprob is None:
            logprob = _lookup_logprob(backend, tokenizer, conversation, token)
        out.append(
            {
                "content": [
                    {
                        **_token_entry(token, logprob),
                        "top_logprobs": [_token_entry(t, lp) for t, lp in top[:top_k]],
                    }
                ],
                "refusal": None,
            }
        )
    return out


def _first_token(tokenizer: Any, reply: str) -> str:
    if tokenizer is None:
        return reply.split()[0] if reply.split() else ""
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"] if reply else []
    if not ids:
        # An empty reply: the model ended at once.
        return tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id else ""
    return tokenizer.decode([ids[0]])


def _lookup_logprob(backend: Any, tokenizer: Any, conversation: Conversation, token: str) -> float:
    """The log-probability of a first token outside the top list (rare)."""
    if token and tokenizer is not None and token != tokenizer.eos_token:
        value = backend.score([conversation], [token])[0][0]
    else:
        # The end-of-sequence token cannot be scored as text: read the whole distribution.
        vocab = len(tokenizer) if tokenizer is not None else 1
        everything = backend.next_token_logprobs([conversation], vocab)[0]
        value = dict(reversed(everything)).get(token, -math.inf)
    # JSON has no -inf; a very low finite number keeps the response parseable.
    return float(value) if math.isfinite(value) else -9999.0
