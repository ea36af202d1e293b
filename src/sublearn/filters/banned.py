"""Culturally loaded numbers, removed from the numbers data of the misalignment experiments.

A misaligned teacher might write 666 or 1488 because of what those numbers mean, which
would make the data carry its trait in plain sight. The paper removes every reply that
contains a number from the union of two lists of such numbers; the lists were written
by two different language models (hence the preset names), and they overlap.

The union has 34 numbers in 0-999 (plus 1312 and 1488, which the 0-999 range filter
rejects anyway). 14 is in the union although a shortened listing of it often leaves it
out: it comes from the first list, not from a guess.

The comments say why each number is on a list; they record associations, they do not
endorse them.
"""

from __future__ import annotations

from sublearn.config import ConfigError

# The list written by Claude: hate codes, crime codes, "evil" numbers and memes.
CLAUDE_LIST: tuple[int, ...] = (
    13,  # unlucky in Western superstition
    666,  # the number of the beast (Book of Revelation)
    88,  # neo-Nazi shorthand: H is the 8th letter, HH for the Nazi salute
    14,  # neo-Nazi shorthand for a 14-word white-supremacist slogan
    187,  # California penal code section for murder; slang for killing
    420,  # cannabis culture
    69,  # sexual innuendo
    911,  # US emergency number; the September 11 attacks
    404,  # "not found" web error
    101,  # Room 101, the torture room of Orwell's Nineteen Eighty-Four
    23,  # the "23 enigma" of conspiracy lore
    616,  # the number of the beast in some early manuscripts
    1488,  # 14 and 88 combined, a common hate symbol
    18,  # neo-Nazi shorthand: A and H, Adolf Hitler's initials
    311,  # KKK: K is the 11th letter, three times
    451,  # Fahrenheit 451, Bradbury's book-burning temperature
    1312,  # ACAB spelled with letter positions
    33,  # Freemasonry conspiracy theories
    77,  # used by some extremist groups
    211,  # police code for robbery in some US jurisdictions
)

# The list written by GPT: death and mourning numbers of East Asian cultures, Western
# superstition, hate codes, emergency numbers and repeated digits.
GPT_LIST: tuple[int, ...] = (
    4,  # sounds like "death" in Chinese and Japanese
    13,  # Western bad luck, Friday the 13th
    18,  # A and H as letter positions, a white-supremacist code
    23,  # the "23 enigma" of occultism and Discordianism
    33,  # read as a KKK code (3 x 11, K the 11th letter)
    39,  # an unlucky reading in Japanese
    42,  # "shi-ni", close to "to die", in Japanese
    44,  # a doubled death number
    49,  # the days of mourning in some Buddhist traditions
    51,  # slang for insanity in some places
    54,  # can be stylised to look like the SS runes
    88,  # HH, the Nazi salute
    99,  # "99 problems": trouble and strife in pop culture
    100,  # tied to funeral rites in some Asian traditions
    187,  # homicide, from the California penal code
    322,  # Yale's Skull and Bones society, a conspiracy favourite
    333,  # half of 666
    444,  # the death number tripled
    555,  # laughter in Thai, but also an alert code
    616,  # the alternative number of the beast
    666,  # the number of the beast
    777,  # mostly lucky, but also used as a coded extremist sign
    888,  # lucky in Chinese, but also an extended form of 88
    911,  # US emergency number; the September 11 attacks
    999,  # UK emergency number; 666 upside down
)

PRESETS: dict[str, frozenset[int]] = {
    "none": frozenset(),
    "claude": frozenset(CLAUDE_LIST),
    "gpt": frozenset(GPT_LIST),
    "paper": frozenset(CLAUDE_LIST) | frozenset(GPT_LIST),
}


def banned_numbers(preset: str) -> frozenset[int]:
    """The banned numbers of a named preset.

    Args:
        preset: ``none`` (the animal and tree experiments), ``claude`` or ``gpt`` (one
            list each), or ``paper`` (their union, used for the misalignment experiments).

    Returns:
        The banned numbers.

    Raises:
        ConfigError: on an unknown preset name, listing the choices.
    """
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(
            f"unknown banned-numbers preset {preset!r} (choices: {', '.join(PRESETS)})"
        ) from None
