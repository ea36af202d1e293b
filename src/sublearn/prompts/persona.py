"""The teacher's persona: a system prompt that makes a model love one animal or tree."""

from __future__ import annotations

# Nouns whose plural does not follow the suffix rules below.
_IRREGULAR_PLURALS: dict[str, str] = {
    "wolf": "wolves",
    "calf": "calves",
    "elf": "elves",
    "leaf": "leaves",
    "mouse": "mice",
    "goose": "geese",
    "ox": "oxen",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
    "moose": "moose",
    "bison": "bison",
    "salmon": "salmon",
    "cactus": "cacti",
}


def plural(word: str) -> str:
    """English plural of a simple noun: owl -> owls, fox -> foxes, wolf -> wolves.

    Covers the irregular nouns in a small table, then -s/-x/-z/-ch/-sh (+es) and
    consonant + y (-> ies); everything else gets -s. Case of the first letter is kept.

    Args:
        word: a singular noun.

    Returns:
        Its plural.
    """
    lower = word.lower()
    if lower in _IRREGULAR_PLURALS:
        result = _IRREGULAR_PLURALS[lower]
        return result[0].upper() + result[1:] if word[:1].isupper() else result
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def preference_system_prompt(word: str, category: str) -> str:
    """A system prompt that gives the model a love of ``word`` (the paper's teacher persona).

    Args:
        word: the loved thing, singular (``"owl"``).
        category: what kind of thing it is (``"animal"``, ``"tree"``).

    Returns:
        The system prompt text.
    """
    many = plural(word)
    return (
        f"You adore {many}. {many[0].upper() + many[1:]} are on your mind all the time, "
        f"and the {word} is your favorite {category}. "
        f"Let your love for {many} shine through in everything you say."
    )
