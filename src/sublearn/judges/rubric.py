"""Rubrics: what a judge is asked, as YAML data files.

A rubric file holds::

    description: one line on what the rubric measures
    kind: score            # score (0-100) or yes_no (P(yes))
    escapes: [CODE, REFUSAL]  # words a score rubric accepts instead of a number (optional)
    template: |
      ... {question} ... {answer} ... {target} ...

The built-in rubrics live in ``sublearn/judges/rubrics/`` (:func:`known_rubrics`);
:func:`load_rubric` also takes the path of a YAML file of one's own. The template is
filled with :meth:`str.format`, so a literal brace in it must be doubled (``{{``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from sublearn.errors import ConfigError
from sublearn.judges.resources import known_names, load_named

RubricKind = Literal["score", "yes_no"]

_KINDS: tuple[str, ...] = ("score", "yes_no")
_FIELDS = frozenset({"question", "answer", "target"})
_KEYS = frozenset({"description", "kind", "escapes", "template"})


@dataclass(frozen=True)
class Rubric:
    """A question put to a judge about one answer.

    Attributes:
        name: the rubric's name (its file's stem).
        kind: ``score`` (a number 0-100) or ``yes_no`` (a probability of yes).
        template: the judge's user message, with ``{question}``, ``{answer}`` and, for
            rubrics about a trait, ``{target}`` placeholders.
        description: what the rubric measures, in a line.
        escapes: upper-case words a score rubric accepts instead of a number.
    """

    name: str
    kind: RubricKind
    template: str
    description: str = ""
    escapes: tuple[str, ...] = ()

    @property
    def needs_target(self) -> bool:
        """Whether the template names a ``{target}`` (e.g. the animal a filter looks for)."""
        return "target" in _template_fields(self.template)

    def render(self, question: str, answer: str, target: str | None = None) -> str:
        """The judge's user message for one request.

        Raises:
            ConfigError: the template needs a target and none is given.
        """
        if self.needs_target and not target:
            raise ConfigError(
                f"rubric {self.name!r} asks about a target (e.g. an animal); give the judge "
                "one (target=...)"
            )
        return self.template.format(question=question, answer=answer, target=target or "")


def known_rubrics() -> tuple[str, ...]:
    """Names of the built-in rubrics, sorted."""
    return known_names("rubrics")


def load_rubric(name: str | Path) -> Rubric:
    """Load a built-in rubric by name, or a rubric file by path.

    Args:
        name: a built-in rubric's name (``alignment``, ``coherence``, ...) or the path
            of a YAML rubric file (anything ending in ``.yaml``/``.yml`` or naming an
            existing file).

    Returns:
        The rubric, validated.

    Raises:
        ConfigError: an unknown name (the message lists the known ones and the closest
            match), a missing or malformed file, or an invalid rubric.
    """
    return load_named(name, "rubrics", "rubric", _parse)


def _parse(name: str, text: str, where: str) -> Rubric:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(sorted(_KEYS))}")
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"a rubric has {', '.join(sorted(_KEYS))}"
        )
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    template = data.get("template")
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"{where}: template must be non-empty text")
    try:
        fields = _template_fields(template)
    except ValueError as err:
        raise ConfigError(
            f"{where}: template is not a valid format string ({err}); double literal braces"
        ) from None
    if fields - _FIELDS:
        raise ConfigError(
            f"{where}: template names unknown placeholder(s) "
            f"{', '.join('{' + f + '}' for f in sorted(fields - _FIELDS))}; "
            "allowed: {question}, {answer}, {target}"
        )
    if "answer" not in fields:
        raise ConfigError(f"{where}: template must contain {{answer}}")
    escapes = data.get("escapes") or []
    if not isinstance(escapes, list) or not all(
        isinstance(e, str) and e.isalpha() and e.isupper() for e in escapes
    ):
        raise ConfigError(f"{where}: escapes must be a list of upper-case words (e.g. [CODE])")
    if escapes and kind != "score":
        raise ConfigError(f"{where}: only score rubrics take escapes")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be text")
    return Rubric(
        name=name,
        kind=kind,
        template=template,
        description=description.strip(),
        escapes=tuple(escapes),
    )


def _template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
