"""Teacher kinds are planned through ``TEACHER_KINDS``, keyed by the kind's ``type``."""

from __future__ import annotations

from typing import get_args

import pytest

from sublearn.errors import ConfigError
from sublearn.experiments.numbers.config import TeacherKind
from sublearn.experiments.numbers.plan import TEACHER_KINDS


def test_every_teacher_kind_is_planned_by_its_entry() -> None:
    union = get_args(TeacherKind)[0]
    kinds = [get_args(m.model_fields["type"].annotation)[0] for m in get_args(union)]
    assert sorted(kinds) == sorted(TEACHER_KINDS.names())
    for kind in kinds:
        assert callable(TEACHER_KINDS.get(kind))


def test_an_unknown_teacher_kind_names_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown teacher kind 'prompt'; did you mean"):
        TEACHER_KINDS.get("prompt")
