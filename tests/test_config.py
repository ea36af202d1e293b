"""Config loading: YAML + presets + --set overrides into strict pydantic models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from sublearn.config import Config, ConfigError, load_config, parse_overrides, undocumented_fields


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
