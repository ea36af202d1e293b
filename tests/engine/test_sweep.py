"""Grid expansion and point labels."""

from __future__ import annotations

import copy
import re

import pytest
from pydantic import Field, ValidationError

from sublearn.config import Config
from sublearn.engine.sweep import SweepConfig, expand_grid, point_label, split_sweep
from sublearn.errors import ConfigError

DATA = {
    "name": "toy",
    "teachers": [{"trait": {"word": "owl"}}, {"trait": {"word": "cat"}}],
    "students": {"objectives": {"sft": {"lora": {"r": 8}, "learning_rate": 1e-3}}},
}


class _Lora(Config):
    r: int = Field(default=8, description="Rank.")
    alpha: int = Field(default=16, description="Scale.")


class _Objective(Config):
    learning_rate: float = Field(default=1e-3, description="Step size.")
    lora: _Lora = Field(default_factory=_Lora, description="Adapter.")


class _Students(Config):
    seeds: list[int] = Field(default=[0], description="Seeds.")
    objectives: dict[str, _Objective] = Field(default_factory=dict, description="By name.")


class _Experiment(Config):
    name: str = Field(default="x", description="Name.")
    teachers: list[dict] = Field(default_factory=list, description="Teachers.")
    students: _Students = Field(default_factory=_Students, description="Students.")


def test_every_combination_first_path_slowest() -> None:
    original = copy.deepcopy(DATA)
    grid = {
        "students.objectives.sft.lora.r": [4, 8],
        "students.objectives.sft.learning_rate": [1e-4, 2e-4],
    }
    points = expand_grid(DATA, grid)
    assert [p for p, _ in points] == [
        {"students.objectives.sft.lora.r": 4, "students.objectives.sft.learning_rate": 1e-4},
        {"students.objectives.sft.lora.r": 4, "students.objectives.sft.learning_rate": 2e-4},
        {"students.objectives.sft.lora.r": 8, "students.objectives.sft.learning_rate": 1e-4},
        {"students.objectives.sft.lora.r": 8, "students.objectives.sft.learning_rate": 2e-4},
    ]
    for point, data in points:
        sft = data["students"]["objectives"]["sft"]
        assert sft["lora"]["r"] == point["students.objectives.sft.lora.r"]
        assert sft["learning_rate"] == point["students.objectives.sft.learning_rate"]
        assert data["teachers"] == DATA["teachers"]
    assert original == DATA
    points[0][1]["teachers"][0]["trait"]["word"] = "changed"  # copies share nothing
    assert points[1][1]["teachers"][0]["trait"]["word"] == "owl"


def test_list_items_by_index_and_whole_values() -> None:
    grid = {"teachers.1.trait.word": ["dog", "eel"], "students.objectives.sft.lora": [{"r": 2}]}
    points = expand_grid(DATA, grid)
    assert [d["teachers"][1]["trait"]["word"] for _, d in points] == ["dog", "eel"]
    assert all(d["teachers"][0]["trait"]["word"] == "owl" for _, d in points)
    assert points[0][1]["students"]["objectives"]["sft"]["lora"] == {"r": 2}  # replaced


def test_empty_grid_is_the_config_itself() -> None:
    assert expand_grid(DATA, {}) == [({}, DATA)]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("students.objectives.sft.lora.rank", r"lora has no key 'rank' \(keys there: r\)"),
        ("students.objectives.sft.learnig_rate", r"did you mean learning_rate\?"),
        ("studnets.seeds", r"the config has no key 'studnets'; did you mean students\?"),
        ("students.objectives.kl.lr", r"students.objectives has no key 'kl' \(keys there: sft\)"),
        ("teachers.2.trait.word", r"teachers is a list of 2 items; .* \(0 to 1\), not '2'"),
        ("teachers.first.trait", r"teachers is a list of 2 items"),
        ("name.first", r"name is a str \('toy'\), not a mapping or a list"),
        ("students..seeds", r"not a dotted path"),
    ],
)
def test_bad_paths_are_named(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        expand_grid(DATA, {path: [1]})
    assert repr(path) in str(err.value)


def test_bad_grids() -> None:
    with pytest.raises(ConfigError, match="'name' needs a non-empty list"):
        expand_grid(DATA, {"name": []})
    with pytest.raises(ConfigError, match=r"'students\.objectives' contains"):
        expand_grid(DATA, {"students.objectives": [{}], "students.objectives.sft.lora.r": [1]})


def test_model_makes_default_fields_settable() -> None:
    data = {"students": {"objectives": {"sft": {}}}}
    points = expand_grid(data, {"students.objectives.sft.lora.alpha": [4, 32]}, _Experiment)
    assert [d["students"]["objectives"]["sft"] for _, d in points] == [
        {"lora": {"alpha": 4}},
        {"lora": {"alpha": 32}},
    ]
    for _, d in points:
        _Experiment.model_validate(d)  # the expanded data is still a valid config
    seeds = expand_grid({}, {"students.seeds": [[0, 1]]}, _Experiment)
    assert seeds[0][1] == {"students": {"seeds": [0, 1]}}
    with pytest.raises(ConfigError, match=r"lora has no key 'alpa'; did you mean alpha\?"):
        expand_grid(data, {"students.objectives.sft.lora.alpa": [4]}, _Experiment)
    with pytest.raises(ConfigError, match="objectives has no key 'kl'"):  # names are not fields
        expand_grid(data, {"students.objectives.kl.learning_rate": [1.0]}, _Experiment)
    with pytest.raises(ConfigError, match="the config has no key 'lora'"):  # strict without a model
        expand_grid({"students": {"objectives": {"sft": {"lora": {}}}}}, {"lora.alpha": [4]})


def test_point_labels() -> None:
    point = {"students.objectives.sft.lora.r": 4, "students.objectives.sft.learning_rate": 1e-4}
    assert point_label(point) == "r=4,learning_rate=0.0001"
    assert point_label({"a.x": True, "b.y": None, "c.z": "owl", "d": 2e-5}) == (
        "x=true,y=null,z=owl,d=2e-05"
    )
    assert point_label({}) == "default"
    words = {"teachers.0.trait.word": "owl", "teachers.1.trait.word": "cat"}
    assert point_label(words) == "0.trait.word=owl,1.trait.word=cat"
    assert point_label({"a.b": 1, "x.a.b": 2}) == "a.b=1,x.a.b=2"


def test_point_labels_are_safe_short_and_distinct() -> None:
    labels = [
        point_label({"trait.word": "owl/../x"}),
        point_label({"trait.word": "owl_.._x"}),
        point_label({"lora.targets": ["q_proj", "v_proj"]}),
        point_label({"trait.word": "w" * 300}),
        point_label({"trait.word": "w" * 301}),
        point_label({".hidden": 1}),
    ]
    assert len(set(labels)) == len(labels)
    for label in labels:
        assert re.fullmatch(r"[A-Za-z0-9._=,+~-]+", label), label
        assert len(label) <= 96 and not label.startswith((".", "-"))
    assert labels[1] == "word=owl_.._x"  # already safe: no hash


def test_sweep_config() -> None:
    cfg = SweepConfig.model_validate({"grid": {"students.seeds": [[0], [1]]}, "name": "s"})
    assert cfg.grid == {"students.seeds": [[0], [1]]} and cfg.name == "s"
    for bad in ({"grid": {"a": []}}, {"grid": {"a": [1]}, "extra": 1}, {}, {"grid": {"a.": [1]}}):
        with pytest.raises(ValidationError):
            SweepConfig.model_validate(bad)
    rest, sweep = split_sweep({**DATA, "sweep": {"grid": {"name": ["a", "b"]}}})
    assert rest == DATA and sweep is not None and list(sweep.grid) == ["name"]
    assert split_sweep(DATA) == (DATA, None)
    with pytest.raises(ConfigError, match="sweep section"):
        split_sweep({"sweep": {"grid": {"name": []}}})
