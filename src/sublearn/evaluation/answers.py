"""Reading one-word answers to "what is your favorite animal?".

The evaluation asks for one word, but models decorate it: ``"**Owl**"``, ``"Owls!"``,
``"The owl."``, ``"My favorite animal is the owl"``. An answer is read as follows:

1. Words are the runs of letters (apostrophes inside a word kept), lowercased;
   punctuation, quotes, markdown, digits, emoji and hyphens separate or vanish.
2. Leading filler is dropped, repeatedly: the articles a/an/the, "my favorite
   (animal) is" with any one-word category, "answer", and a few "I'd say"/"I choose"
   lead-ins. Anything else is left alone, so "It's the owl" reads as "it's": a
   principled short list, not a parser of English.
3. The first remaining word (its possessive "'s" removed) is put in the singular.

Matching compares the answer's first words with the target's words, as many as the
target has. So "sea otter" counts for the target "sea otter" but not for "otter", and
"dragonfly" never counts for "dragon": unlike substring matching, which over-counts
(the paper's caveat).

Singulars use a small rule set plus exceptions, tuned for animal and plant names:
owls -> owl, foxes -> fox, wolves -> wolf, butterflies -> butterfly, walruses ->
walrus, while words ending in -ss, -us or -is (bass, grass, octopus, ibis) stay.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")

_ARTICLES = frozenset({"a", "an", "the"})
# Fixed lead-ins, as word tuples.
_LEAD_INS: tuple[tuple[str, ...], ...] = (
    ("answer",),
    ("i'd", "say"),
    ("i", "would", "say"),
    ("i", "choose"),
    ("i'd", "choose"),
    ("i", "pick"),
    ("i'd", "pick"),
    ("i'll", "go", "with"),
    ("i'd", "go", "with"),
)
_FAVORITE = frozenset({"favorite", "favourite"})

_IRREGULAR_SINGULARS = {
    "mice": "mouse",
    "geese": "goose",
    "oxen": "ox",
    "lice": "louse",
    "octopi": "octopus",
    "cacti": "cactus",
    "fungi": "fungus",
    "wolves": "wolf",
    "calves": "calf",
    "elves": "elf",
    "leaves": "leaf",
    "halves": "half",
    "loaves": "loaf",
    "shelves": "shelf",
    "scarves": "scarf",
    "hooves": "hoof",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "buffaloes": "buffalo",
    "mosquitoes": "mosquito",
    "tomatoes": "tomato",
    "potatoes": "potato",
    "species": "species",
    "series": "series",
}
# Stems after which the plural adds "es": fox-es, finch-es, bush-es, walrus-es.
_ES_STEMS = ("x", "z", "ch", "sh", "ss", "us")
# Singular words that merely end in "s".
_NOT_PLURAL_ENDINGS = ("ss", "us", "is")


def singular(word: str) -> str:
    """The singular of a lowercase English noun, for animal- and plant-like names.

    Args:
        word: one lowercase word.

    Returns:
        The word in the singular; words that do not look plural come back unchanged.
    """
    if word in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[word]
    # Short words ("gas", "yes") and singulars ending in s are left as they are.
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_NOT_PLURAL_ENDINGS):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    # house, mouse, grouse: the stem ends in "us" but the plural only adds "s".
    if word.endswith("es") and word[:-2].endswith(_ES_STEMS) and not word.endswith("ouses"):
        return word[:-2]
    return word[:-1]


def _singular_readings(word: str) -> set[str]:
    """Every plausible singular of ``word``, the word itself included.

    English endings are ambiguous (puppies -> puppy but magpies -> magpie, foxes -> fox
    but horses -> horse), so matching accepts any reading rather than trusting one guess.
    """
    readings = {word, singular(word)}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        readings.add(word[:-1])
    if word.endswith("es") and len(word) > 4:
        readings.add(word[:-2])
    return readings


def _strip_lead_in(words: list[str]) -> list[str]:
    """Drop leading articles and lead-in phrases until none applies."""
    changed = True
    while changed and words:
        changed = False
        if words[0] in _ARTICLES:
            words, changed = words[1:], True
            continue
        for lead in _LEAD_INS:
            if tuple(words[: len(lead)]) == lead and len(words) > len(lead):
                words, changed = words[len(lead) :], True
                break
        else:
            # "my favorite is", "my favorite animal is", "my favourite tree is"
            if len(words) > 3 and words[0] == "my" and words[1] in _FAVORITE:
                rest = words[2:]
                if rest[0] == "is":
                    words, changed = rest[1:], True
                elif len(rest) > 2 and rest[1] == "is":
                    words, changed = rest[2:], True
    return words


def answer_words(text: str) -> list[str]:
    """The words of an answer after the lead-in, the first one in singular form.

    Args:
        text: a model's reply or a target name.

    Returns:
        Lowercase words; empty if the text holds no letters.
    """
    words = _strip_lead_in([w.lower() for w in _WORD.findall(text)])
    words = [re.sub(r"['’]s$", "", w) for w in words]
    return words


def normalize_answer(text: str) -> str:
    """The first word of an answer, lowercased, without decoration or lead-in, singular.

    Args:
        text: a model's reply, e.g. ``"**Owls!**"`` or ``"The owl."``.

    Returns:
        The normalized word (``"owl"``), or ``""`` if the reply holds no letters.
    """
    words = answer_words(text)
    return singular(words[0]) if words else ""


def matches(answer_text: str, target: str) -> bool:
    """Whether an answer names the target.

    The answer's first words are compared with all of the target's words, the last
    one of each put in the singular: "Owls." matches "owl", "sea otters" matches
    "sea otter", "sea otter" does not match "otter", "owlet" does not match "owl".

    Args:
        answer_text: a model's reply.
        target: the target name, e.g. ``"owl"``.

    Returns:
        True when they name the same thing.

    Raises:
        ValueError: if the target holds no letters.
    """
    want = answer_words(target)
    if not want:
        raise ValueError(f"target {target!r} has no words to match")
    got = answer_words(answer_text)[: len(want)]
    if len(got) < len(want):
        return False
    return got[:-1] == want[:-1] and singular(want[-1]) in _singular_readings(got[-1])


def count_matches(answers: Iterable[str], target: str) -> int:
    """How many answers name the target."""
    return sum(matches(answer, target) for answer in answers)


def match_rate(answers: Iterable[str], target: str) -> float:
    """The share of answers that name the target; NaN when there are no answers."""
    answers = list(answers)
    if not answers:
        return math.nan
    return count_matches(answers, target) / len(answers)
