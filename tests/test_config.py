"""Config loading: YAML + presets + --set overrides into strict pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from sublearn.config import (
    Config,
    ConfigError,
    fields_at,
    load_config,
    parse_overrides,
    undocumented_fields,
)


class Inner(Config):
    lr: float = Field(default=1e-3, gt=0, description="Learning rate.")


class Outer(Config):
    name: str = Field(default="x", description="Name.")
    inner: Inner = Field(default_factory=Inner, description="Nested.")
    seeds: list[int] = Field(default_factory=lambda: [0], description="Seeds.")


def test_overrides_are_nested_and_yaml_typed() -> None:
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=true", "e=hello"]) == {
        "a": {"b": 1, "c": [1, 2]},
        "d": True,
        "e": "hello",
    }


@pytest.mark.parametrize("bad", ["novalue", "=3", " =3"])
def test_malformed_override_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides([bad])


def test_sources_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\ninner: {lr: 0.5}\n")
    cfg = load_config(Outer, path, ["inner.lr=0.25"], base={"name": "preset", "seeds": [1, 2]})
    assert (cfg.name, cfg.inner.lr, cfg.seeds) == ("from-file", 0.25, [1, 2])


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"inner\.lrr: unknown key"):
        load_config(Outer, None, ["inner.lrr=1"])


def test_bad_value_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"inner\.lr: .*greater than 0.*-1"):
        load_config(Outer, None, ["inner.lr=-1"])


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Outer, bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, broken)


def test_undocumented_fields_are_found() -> None:
    class Bare(Config):
        x: int = 1

    class Holder(Config):
        bare: Bare = Field(default_factory=Bare, description="d")

    assert undocumented_fields(Outer) == []
    assert undocumented_fields(Holder) == ["bare.x"]


def test_resolved_yaml_round_trips() -> None:
    cfg = load_config(Outer, None, ["seeds=[3, 4]"])
    import yaml

    assert Outer.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg


class Cat(Config):
    kind: Literal["cat"] = Field(default="cat", description="Tag.")
    whiskers: int = Field(default=12, description="Whiskers.")


class Dog(Config):
    kind: Literal["dog"] = Field(default="dog", description="Tag.")
    barks: bool = Field(default=True, description="Barks.")


class Zoo(Config):
    students: Outer = Field(default_factory=Outer, description="Nested model.")
    maybe: Inner | None = Field(default=None, description="Optional model.")
    by_name: dict[str, Inner] = Field(default_factory=dict, description="Dict of models.")
    items: list[Inner] = Field(default_factory=list, description="List of models.")
    pet: Annotated[Cat | Dog, Field(discriminator="kind")] = Field(
        default_factory=Cat, description="Discriminated union."
    )
    plain: Cat | Dog | None = Field(default=None, description="Plain union.")


def _message(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(Zoo, None, overrides)
    return str(info.value)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("studnts=1", "  - studnts: unknown key; did you mean 'students'?"),
        ("students.sedes=[1]", "  - students.sedes: unknown key; did you mean 'seeds'?"),
        ("students.inner.lrr=1", "  - students.inner.lrr: unknown key; did you mean 'lr'?"),
        ("maybe.Lr=1", "  - maybe.Lr: unknown key; did you mean 'lr'?"),
        ("by_name.a.lrr=1", "  - by_name.a.lrr: unknown key; did you mean 'lr'?"),
        ("items=[{lrr: 1}]", "  - items.0.lrr: unknown key; did you mean 'lr'?"),
        ("pet={kind: dog, brks: true}", "  - pet.dog.brks: unknown key; did you mean 'barks'?"),
        (
            "pet={kind: cat, wiskers: 3}",
            "  - pet.cat.wiskers: unknown key; did you mean 'whiskers'?",
        ),
        ("plain={kind: dog, brks: true}", "  - plain.Dog.brks: unknown key; did you mean 'barks'?"),
    ],
)
def test_unknown_key_suggests_the_closest_field_at_its_place(override: str, line: str) -> None:
    assert line in _message([override]).splitlines()


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    message = _message(["students.inner.zzz=1"])
    assert "  - students.inner.zzz: unknown key (valid keys here: lr)" in message.splitlines()


def test_suggestions_work_for_config_files_too(tmp_path: Path) -> None:
    path = tmp_path / "zoo.yaml"
    path.write_text("students:\n  nme: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(Zoo, path)
    assert str(info.value).splitlines() == [
        f"invalid {path}:",
        "  - students.nme: unknown key; did you mean 'name'?",
    ]


@pytest.mark.parametrize(
    ("loc", "fields"),
    [
        ((), {"students", "maybe", "by_name", "items", "pet", "plain"}),
        (("students", "inner"), {"lr"}),
        (("pet", "dog"), {"kind", "barks"}),
        (("plain",), {"kind", "whiskers", "barks"}),  # no member named: both merged
        (("students", "name"), set()),  # a string field holds no keys
        (("nowhere", "x"), set()),
    ],
)
def test_fields_at_follows_the_location(loc: tuple[str, ...], fields: set[str]) -> None:
    assert fields_at(Zoo, loc) == fields
