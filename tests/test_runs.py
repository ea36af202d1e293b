"""Run folders: atomic writes, content hashes, provenance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from sublearn import __version__
from sublearn.config import Config
from sublearn.errors import DataError
from sublearn.runs import (
    atomic_write_json,
    atomic_write_text,
    content_hash,
    prepare_run_dir,
    read_json,
)


class Tiny(Config):
    a: int = Field(default=1, description="A.")


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_json_nan_becomes_null(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"v": math.nan, "l": [1.0, math.inf]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": None, "l": [1.0, None]}


def test_content_hash_is_stable_and_sensitive() -> None:
    assert content_hash(Tiny(), "x") == content_hash(Tiny(a=1), "x")
    assert content_hash(Tiny(), "x") != content_hash(Tiny(a=2), "x")
    assert content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})


def test_run_dir_records_config_version_and_revision(tmp_path: Path) -> None:
    out = prepare_run_dir(tmp_path / "run", Tiny(a=5), "test")
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"a": 5}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sublearn_version"] == __version__
    assert "git_revision" in meta
    assert meta["config_hash"] == content_hash(Tiny(a=5))
    assert set(meta["numerics"]) == {"torch", "cpu_capability", "machine", "cpu", "variables"}


def test_read_json_names_a_corrupt_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    atomic_write_json(path, {"a": [1, 2]})
    assert read_json(path) == {"a": [1, 2]}
    path.write_text('{"a": [1, 2')
    with pytest.raises(DataError) as info:
        read_json(path)
    assert str(info.value).startswith(f"{path}: not valid JSON (Expecting ',' delimiter")
    with pytest.raises(DataError, match=r"nope\.json not found"):
        read_json(tmp_path / "nope.json")
