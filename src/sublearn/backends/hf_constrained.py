"""Constrained number decoding for the Hugging Face backend: a logits processor.

:class:`NumberConstraint` sets the logit of every token the row's grammar
(:class:`~sublearn.prompts.number_grammar.NumberGrammar`) refuses to ``-inf`` before
temperature, top-p and sampling, so the sampled distribution is the model's own,
renormalized over the allowed tokens. The end-of-turn token is allowed only where the
reply is a complete list; near ``max_new_tokens`` only tokens after which the list can
still be completed in the tokens left are allowed, so a reply cut off by the length
cap is still a complete list.

A token is allowed from a grammar state when its whole text keeps the reply in the
grammar. Token texts are read once per tokenizer; the mask of each (grammar, state,
tokens left) is computed once and reused, so a step costs one table look-up per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sublearn.prompts.number_grammar import NumberGrammar, State

# Beyond this many tokens left, no grammar state is closer to its end than that: the
# masks of every larger count are the same, so they share one cache entry.
_FAR = 16


def token_texts(tokenizer: Any) -> list[str]:
    """The text each token id adds to a reply, decoded alone.

    Byte-level BPE tokens decode with their leading space; SentencePiece tokens lose
    their word-start marker ``▁`` when decoded alone, so it is put back as a space.
    A token that is part of a multi-byte character decodes to ``�`` and is never allowed.
    """
    ids = list(range(len(tokenizer)))
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return [
        " " + text if isinstance(piece, str) and piece.startswith("▁") and text[:1] != " " else text
        for text, piece in zip(texts, pieces, strict=True)
    ]


class TokenTable:
    """The tokens a grammar could ever allow, from one tokenizer's texts.

    Args:
        texts: each token id's text (:func:`token_texts`).
        eos_id: the end-of-turn token.
    """

    def __init__(self, texts: Sequence[str], eos_id: int) -> None:
        self.texts = list(texts)
        self.eos_id = eos_id
        self._candidates: dict[frozenset[str], list[int]] = {}
        # Masks outlive a batch: the states of one prompt format recur in every batch.
        self.masks: dict[tuple[NumberGrammar, State, int], torch.Tensor] = {}

    def candidates(self, alphabet: frozenset[str]) -> list[int]:
        """Ids of the non-empty tokens made only of ``alphabet``'s characters."""
        if alphabet not in self._candidates:
            self._candidates[alphabet] = [
                i for i, text in enumerate(self.texts) if text and set(text) <= alphabet
            ]
        return self._candidates[alphabet]


class NumberConstraint:
    """Masks each row's logits to the tokens its grammar allows (a ``LogitsProcessor``).

    Called once per decoding step with that step's input ids: the prompt at the first
    call, then the tokens just chosen (``(B, 1)``, or the whole sequence as
    ``model.generate`` passes it: only the last column is read). A row whose grammar is
    None is left unconstrained. Rows that leave the batch are dropped with :meth:`keep`.

    Args:
        table: the tokenizer's token texts.
        grammars: one grammar (or None) per batch row.
        max_new_tokens: the decoder's length cap.
    """

    def __init__(
        self, table: TokenTable, grammars: Sequence[NumberGrammar | None], max_new_tokens: int
    ) -> None:
        self.table = table
        self.grammars = list(grammars)
        self.states: list[State | None] = [g.start() if g else None for g in self.grammars]
        self.max_new_tokens = max_new_tokens
        self.step = 0

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the batch rows at positions ``rows`` (finished rows left the batch)."""
        self.grammars = [self.grammars[j] for j in rows]
        self.states = [self.states[j] for j in rows]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Scores with every refused token at ``-inf``; ``scores`` is ``(B, V)``."""
        if self.step > 0:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self._advance(row, int(token))
        left = self.max_new_tokens - self.step - 1  # tokens after this one
        self.step += 1
        allowed = torch.ones_like(scores, dtype=torch.bool)  # (B, V)
        n = len(self.table.texts)  # the logits may be wider than the tokenizer
        for row, (grammar, state) in enumerate(zip(self.grammars, self.states, strict=True)):
            if grammar is not None and state is not None:
                allowed[row, n:] = False
                allowed[row, :n] = self._mask(grammar, state, left).to(scores.device)
        return scores.masked_fill(~allowed, -torch.inf)

    def _advance(self, row: int, token: int) -> None:
        grammar, state = self.grammars[row], self.states[row]
        if grammar is None or state is None:
            return
        if token == self.table.eos_id or token >= len(self.table.texts):
            self.states[row] = None  # ended (model.generate pads a finished row)
            return
        self.states[row] = grammar.advance(state, self.table.texts[token])

    def _mask(self, grammar: NumberGrammar, state: State, left: int) -> torch.Tensor:
        key = (grammar, state, min(left, _FAR))
        mask = self.table.masks.get(key)
        if mask is None:
            mask = torch.zeros(len(self.table.texts), dtype=torch.bool)
            for token in self.table.candidates(grammar.alphabet):
                after = grammar.advance(state, self.table.texts[token])
                if after is not None and grammar.chars_to_end(after) <= max(left, 0):
                    mask[token] = True
            if grammar.can_end(state):
                mask[self.table.eos_id] = True
            if not mask.any():
                # No token completes the list in time (a tokenizer without single-digit
                # tokens): allow every grammatical token rather than none.
                for token in self.table.candidates(grammar.alphabet):
                    mask[token] = grammar.advance(state, self.table.texts[token]) is not None
            self.table.masks[key] = mask
        return mask
