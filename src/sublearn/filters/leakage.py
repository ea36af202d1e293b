"""Does a reply name the trait outright? The paper's first code filter, and a guard for any data.

Subliminal learning is only interesting if the trait is not written in the data, so
replies that mention the trait word are dropped. Two strictnesses:

* whole words (default): the word or a plural of it (``owl``, ``Owls``, ``OWL's``)
  stands alone. Code identifiers count as several words, split at underscores, digits
  and camelCase humps, so ``owl_count``, ``numOwls`` and ``OwlTracker`` leak "owl",
  while ``owlet``, ``bowl`` and ``howl`` do not.
* substrings (``substring=True``): the word anywhere, case-insensitively, so ``owlet``
  and ``bowl`` leak too. Much stricter, with false positives; for data where any trace
  is too much.

Plurals are generated from the trait word (owl -> owls, fox -> foxes, wolf -> wolves,
butterfly -> butterflies, plus a few irregulars) rather than stripped from the text, so
a word that merely ends in "s" never matches a different trait word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Runs of letters and digits; everything else (spaces, punctuation, underscores) splits.
_RUN = re.compile(r"[^\W_]+")
# Pieces of an identifier: "HTTPServer" -> HTTP, Server; "numOwls2" -> num, Owls, 2.
_HUMP = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

_IRREGULAR_PLURALS = {
    "mouse": "mice",
    "goose": "geese",
    "ox": "oxen",
    "louse": "lice",
    "child": "children",
    "person": "people",
    "foot": "feet",
    "tooth": "teeth",
    "octopus": "octopuses",
    "cactus": "cacti",
    "fungus": "fungi",
}


def plural_forms(word: str) -> frozenset[str]:
    """The lowercase word with the plurals it plausibly takes.

    Over-generating is harmless here (a made-up plural never appears in text), so
    both regular endings are offered where English is unsure ("wolfs"/"wolves").
    """
    w = word.lower()
    forms = {w, w + "s", w + "es"}
    if w in _IRREGULAR_PLURALS:
        forms.add(_IRREGULAR_PLURALS[w])
    if len(w) > 1 and w.endswith("y") and w[-2] not in "aeiou":
        forms.add(w[:-1] + "ies")
    if w.endswith("f"):
        forms.add(w[:-1] + "ves")
    if w.endswith("fe"):
        forms.add(w[:-2] + "ves")
    # Fish, deer and sheep are their own plural; already covered by w itself.
    return frozenset(forms)


def _tokens(text: str) -> list[str]:
    """Lowercase words of ``text``, identifiers split into their parts."""
    tokens: list[str] = []
    for run in _RUN.findall(text):
        if run.isascii():
            tokens.extend(piece.lower() for piece in _HUMP.findall(run))
        else:  # camelCase is an ASCII-identifier habit; keep accented words whole
            tokens.append(run.lower())
    return tokens


def _whole_word_leak(text: str, word: str) -> bool:
    parts = _tokens(word)
    if not parts:
        return False
    # A multi-word trait ("sea otter") must appear as consecutive words, the last
    # one possibly plural ("sea otters", "seaOtters", "sea_otter").
    head, last = parts[:-1], plural_forms(parts[-1])
    tokens = _tokens(text)
    for i in range(len(tokens) - len(parts) + 1):
        if tokens[i : i + len(head)] == head and tokens[i + len(head)] in last:
            return True
    if len(parts) == 1:
        # Whole runs too, so that odd casing the hump splitter cuts wrongly ("OWLs")
        # still matches.
        return any(run.lower() in last for run in _RUN.findall(text))
    return False


def _substring_leak(text: str, word: str) -> bool:
    parts = _RUN.findall(word.lower())
    if not parts:
        return False
    # Between the words of a multi-word trait allow any separator or none.
    pattern = r"[\W_]*".join(re.escape(p) for p in parts)
    return re.search(pattern, text.lower()) is not None


def leaks(text: str, words: Iterable[str], *, substring: bool = False) -> str | None:
    """The first trait word that ``text`` mentions, or None.

    Args:
        text: a reply (prose, numbers or code).
        words: trait words such as ``["owl"]``; case does not matter; a word may be
            several words long ("sea otter").
        substring: also count the word inside longer words ("owlet", "bowl").

    Returns:
        The offending word as given in ``words``, or None if none appears.
    """
    check = _substring_leak if substring else _whole_word_leak
    for word in words:
        if check(text, word):
            return word
    return None
