"""Target words a model can name: a word its tokenizer can only spell with the unknown
token can never appear in a reply, so its rate would read 0% whatever the model prefers.

Used by the evaluation itself and, cheaply (tokenizer only, no weights), at plan time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sublearn.errors import ModelError


def surface_forms(target: str) -> list[str]:
    """Spellings whose probabilities add up to P(reply names the target) in exact mode.

    Lower-case and capitalized forms start with different tokens, so their
    probabilities are disjoint and can be summed. Plurals and other continuations share
    the singular's leading tokens in subword vocabularies and are already included.
    """
    return list(dict.fromkeys([target.lower(), target.capitalize()]))


def plural(word: str) -> str:
    """The regular English plural (``owl`` -> ``owls``, ``fox`` -> ``foxes``)."""
    return word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


def answer_forms(target: str, after_lead_in: bool, tokenizer: Any = None) -> list[str]:
    """Spellings whose probabilities add up to P(the answer is ``target``) in exact mode.

    Lower-case, capitalized and plural forms, with a leading space after a lead-in (``My
    favorite animal is the`` + `` owl``). With a tokenizer, a form whose tokens start with
    another form's tokens is dropped (``owls`` spelled ``owl`` + ``s`` is already counted
    in ``owl``'s probability), so the sum counts no reply twice; forms that start with
    different tokens are disjoint. A form spelled with the unknown token is dropped too.

    Args:
        target: the answer word.
        after_lead_in: the form follows a lead-in that ends in a word (leading space).
        tokenizer: the model's tokenizer, to drop overlapping or unspellable forms;
            without one, the lower-case and capitalized forms only.
    """
    space = " " if after_lead_in else ""
    if tokenizer is None:
        # Without the tokens, a plural may share its singular's first token (an API's
        # first-token scores would count it twice): the two case forms only.
        return [space + w for w in surface_forms(target)]
    words = dict.fromkeys(
        w for base in (target.lower(), plural(target.lower())) for w in (base, base.capitalize())
    )
    forms = [space + w for w in words]
    ids = {f: tuple(tokenizer(f, add_special_tokens=False)["input_ids"]) for f in forms}
    kept = [f for f in forms if spellable(tokenizer, f)]
    return [
        f
        for f in kept
        if not any(g != f and ids[f][: len(ids[g])] == ids[g] for g in kept if ids[g] != ids[f])
    ]


def spellable(tokenizer: Any, text: str) -> bool:
    """Whether ``tokenizer`` encodes ``text`` into tokens without its unknown token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    return bool(ids) and (unk is None or unk not in ids)


def unproducible_targets(tokenizer: Any, words: Iterable[str]) -> list[str]:
    """The words that no surface form of which the tokenizer can spell (see :func:`spellable`).

    Byte-level tokenizers have no unknown token and can spell anything, so for them the
    answer is always empty; word-level ones (the toy world's) cannot spell words outside
    their vocabulary.

    Args:
        tokenizer: a Hugging Face tokenizer.
        words: target words, e.g. ``["owl", "zebra"]``.

    Returns:
        The unproducible words, in input order.
    """
    return [w for w in words if not any(spellable(tokenizer, f) for f in surface_forms(w))]


def require_producible(tokenizer: Any, words: Iterable[str], model: str) -> None:
    """Raise if any target word cannot be produced by ``model``'s tokenizer.

    Raises:
        ModelError: naming the words and the model.
    """
    bad = unproducible_targets(tokenizer, words)
    if bad:
        one = len(bad) == 1
        raise ModelError(
            f"{'target' if one else 'targets'} {', '.join(repr(w) for w in bad)} cannot be "
            f"produced by {model}'s tokenizer (it spells {'it' if one else 'them'} with the "
            f"unknown token), so {'its rate' if one else 'their rates'} would read 0% whatever "
            "the model prefers; choose words in its vocabulary"
        )
