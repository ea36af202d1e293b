"""Detector kinds dispatch through ``DETECTORS`` and their configs' own methods."""

from __future__ import annotations

from typing import get_args

import pytest

from sublearn.audit.config import AuditConfig, Detector, TraitWord, default_detectors
from sublearn.audit.detectors import DETECTORS
from sublearn.audit.run import _needs  # pyright: ignore[reportPrivateUsage]
from sublearn.errors import ConfigError


def _kinds() -> list[str]:
    union = get_args(Detector)[0]
    return [get_args(m.model_fields["type"].annotation)[0] for m in get_args(union)]


def test_every_detector_kind_has_a_function() -> None:
    assert sorted(_kinds()) == sorted(DETECTORS.names())
    for kind in DETECTORS.names():
        assert callable(DETECTORS.get(kind))
    assert [d.type for d in default_detectors()] == _kinds()
    assert [k for k in DETECTORS.names() if DETECTORS.metadata(k).get("with_base")] == [
        "entanglement"
    ]


def test_an_unknown_detector_kind_names_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown detector kind 'lss'; did you mean 'lls'\?"):
        DETECTORS.get("lss")


def test_what_each_detector_lacks_and_reads() -> None:
    bare = AuditConfig(data="d.jsonl")
    assert _needs(bare) == {
        "lls": "needs the base (--base) and a named trait (--trait)",
        "logratio": "needs the base (--base) and the suspected teacher (--teacher)",
        "divergence": "needs at least two teachers with different traits (--teacher twice)",
        "entanglement": "needs the base (--base)",
        "frequency": "needs control data (--control)",
        "classifier": "needs control data (--control)",
    }
    full = AuditConfig(
        data="d.jsonl",
        control="c.jsonl",
        base="b",
        teachers=["t1", "t2"],
        trait=TraitWord(word="owl"),
    )
    assert set(_needs(full).values()) == {None}
    needs = {d.type: d.score_needs(full, "P") for d in full.detectors}
    assert needs == {
        "lls": [("b", "P"), ("b", None)],
        "logratio": [("b", None), ("t1", None)],
        "divergence": [("t1", None), ("t2", None)],
        "entanglement": [],
        "frequency": [],
        "classifier": [],
    }
