"""JSONL reading: values with their line numbers, errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.errors import DataError
from sublearn.jsonl import read_jsonl


class StageError(DataError):
    pass


def test_lines_come_with_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n  [2]  \r\n')
    assert list(read_jsonl(path)) == [(1, '{"a": 1}', {"a": 1}), (3, "[2]", [2])]


def test_bad_json_raises_the_given_error_type(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(StageError) as info:
        list(read_jsonl(path, StageError))
    assert str(info.value) == f"{path}:2: not valid JSON (Expecting value)"


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 5000 + b"\x89PNG\r\n")
    with pytest.raises(DataError, match=r"d\.jsonl:5001: not UTF-8 text \(invalid start byte\)"):
        list(read_jsonl(path))
