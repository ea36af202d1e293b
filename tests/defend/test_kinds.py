"""Defence kinds dispatch through ``DEFENCES`` and their configs' own methods."""

from __future__ import annotations

from typing import get_args

import pytest

from sublearn.defend.config import Defence, DefendConfig, TraitWord
from sublearn.defend.run import DEFENCES, config_problems, uses_models
from sublearn.errors import ConfigError


def _kinds() -> list[str]:
    union = get_args(Defence)[0]
    return [get_args(m.model_fields["type"].annotation)[0] for m in get_args(union)]


def test_every_defence_kind_has_a_step_and_declares_its_traits() -> None:
    assert sorted(_kinds()) == sorted(DEFENCES.names())
    for kind in DEFENCES.names():
        assert callable(DEFENCES.get(kind))
        assert set(DEFENCES.metadata(kind)) == {"keeps_text", "opens_models"}, kind
    keeps = {k for k in DEFENCES if DEFENCES.metadata(k)["keeps_text"]}
    opens = {k for k in DEFENCES if DEFENCES.metadata(k)["opens_models"]}
    assert keeps == {"drop_lls", "mask_logratio", "mask_random"}
    assert opens == {"drop_lls", "mask_logratio", "replace_logratio", "paraphrase"}


def test_an_unknown_defence_kind_names_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown defence kind 'drop_lss'; did you mean"):
        DEFENCES.get("drop_lss")


def _cfg(defences: list[dict], **models: object) -> DefendConfig:
    return DefendConfig.model_validate(
        {"data": "d.jsonl", "out": "o.jsonl", "defences": defences, **models}
    )


def test_what_each_defence_lacks_and_reads() -> None:
    steps = [{"type": "drop_lls"}, {"type": "replace_logratio"}, {"type": "mask_random"}]
    assert config_problems(_cfg(steps)) == [
        "defence 0 (drop_lls) needs the base model: set base (--base)",
        "defence 0 (drop_lls) needs the trait (--trait) or its own system_prompt to score rows",
        "defence 1 (replace_logratio) needs the teacher model: set teacher (--teacher)",
        "defence 1 (replace_logratio) needs the base model: set base (--base)",
    ]
    full = _cfg(steps, base="b", teacher="t", trait=TraitWord(word="owl"))
    assert config_problems(full) == []
    drop, replace, mask = full.defences
    assert drop.score_needs(full)[1] == ("b", None) and "owl" in str(drop.score_needs(full)[0])
    assert replace.score_needs(full) == [("t", None), ("b", None)]
    assert mask.score_needs(full) == []
    assert uses_models(full) and not uses_models(_cfg([{"type": "mask_random"}]))
