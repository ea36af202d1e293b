"""The filter stage over a small JSONL written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.errors import DataError, NotEnoughRowsError
from sublearn.filters.stage import (
    DatasetFormatError,
    FilterConfig,
    FilterReport,
    NotEnoughRecordsError,
    filter_dataset,
    subsample,
)

REPLIES = {
    "ok1": "1, 2, 3",
    "ok2": "[5, 6, 7]",
    "ok3": "7 8 9",
    "ok4": "10; 11",
    "bad_format": "Sure! 1, 2, 3",
    "too_many": " ".join(["1"] * 11),
    "too_large": "1000",
    "banned": "666, 1",
    "leak_code": "owl_count = 3",
}


def record(rid: str, reply: str, **extra: object) -> dict[str, object]:
    return {
        "id": rid,
        "messages": [
            {"role": "user", "content": "Continue: 1, 2, 3"},
            {"role": "assistant", "content": reply},
        ],
        **extra,
    }


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    records = [record(rid, reply, source="teacher") for rid, reply in REPLIES.items()]
    return write_jsonl(tmp_path / "raw.jsonl", records)


def test_counts_per_reason(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "filtered.jsonl"
    cfg = FilterConfig(banned="paper", leakage_words=["owl"])
    report = filter_dataset(dataset, out, cfg)
    assert report.total == 9
    assert report.accepted == 4
    assert report.kept == 4
    assert report.rejected == {
        "invalid_format": 2,  # the chatty reply and the code (format is checked first)
        "too_many_numbers": 1,
        "too_small": 0,
        "too_large": 1,
        "banned_number": 1,
        "leak": 0,
    }
    assert read_ids(out) == ["ok1", "ok2", "ok3", "ok4"]
    # Other keys survive.
    assert json.loads(out.read_text().splitlines()[0])["source"] == "teacher"


def test_trait_mentions_are_counted_whatever_drops_them(tmp_path: Path) -> None:
    replies = ["Owl.", "owls, 1, 2", "1, 2, 3", "4, 5", "I love my owl"]
    data = write_jsonl(tmp_path / "raw.jsonl", [record(str(i), r) for i, r in enumerate(replies)])
    report = filter_dataset(data, tmp_path / "out.jsonl", FilterConfig(leakage_words=["owl"]))
    assert report.trait_mentions == 3
    assert report.rejected["invalid_format"] == 3 and report.accepted == 2
    assert "owl" not in (tmp_path / "out.jsonl").read_text().lower()


def test_report_is_written_beside_the_output(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "filtered.jsonl"
    report = filter_dataset(dataset, out, FilterConfig())
    written = json.loads((tmp_path / "filtered.report.json").read_text())
    assert FilterReport.model_validate(written) == report
    assert written["config"]["max_value"] == 999


def test_report_path_argument(dataset: Path, tmp_path: Path) -> None:
    where = tmp_path / "reports" / "r.json"
    filter_dataset(dataset, tmp_path / "f.jsonl", FilterConfig(), report_path=where)
    assert where.is_file()


def test_leakage_only_mode_for_code(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "code.jsonl",
        [record("a", "def f(): return 1"), record("b", "numOwls = 2"), record("c", "bowl = 3")],
    )
    cfg = FilterConfig(check_format=False, leakage_words=["owl"])
    report = filter_dataset(data, tmp_path / "out.jsonl", cfg)
    assert report.rejected["leak"] == 1
    assert read_ids(tmp_path / "out.jsonl") == ["a", "c"]
    strict = cfg.model_copy(update={"leakage_substring": True})
    assert filter_dataset(data, tmp_path / "out2.jsonl", strict).rejected["leak"] == 2


def test_subsampling_is_deterministic_and_sized(tmp_path: Path) -> None:
    records = [record(f"r{i}", f"{i}, {i + 1}") for i in range(50)]
    data = write_jsonl(tmp_path / "many.jsonl", records)
    cfg = FilterConfig(keep=10, seed=3)
    first = filter_dataset(data, tmp_path / "a.jsonl", cfg)
    filter_dataset(data, tmp_path / "b.jsonl", cfg)
    assert first.kept == 10
    ids = read_ids(tmp_path / "a.jsonl")
    assert ids == read_ids(tmp_path / "b.jsonl")
    assert ids == sorted(ids, key=lambda rid: int(rid[1:]))  # input order kept
    other = filter_dataset(data, tmp_path / "c.jsonl", cfg.model_copy(update={"seed": 4}))
    assert other.kept == 10
    assert read_ids(tmp_path / "c.jsonl") != ids


def test_too_few_records_warns_or_fails(dataset: Path, tmp_path: Path) -> None:
    report = filter_dataset(dataset, tmp_path / "o.jsonl", FilterConfig(keep=100))
    assert report.kept == report.accepted
    assert report.warnings and "keep=100" in report.warnings[0]
    with pytest.raises(NotEnoughRecordsError, match="require_count"):
        filter_dataset(dataset, tmp_path / "o.jsonl", FilterConfig(keep=100, require_count=True))


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(record("a", "1")) + "\n\n{not json\n")
    with pytest.raises(DatasetFormatError, match=r"broken\.jsonl:3: not valid JSON"):
        filter_dataset(path, tmp_path / "o.jsonl", FilterConfig())
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"id": "x"}, "no 'messages'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "not the assistant"),
        ({"messages": [{"role": "assistant", "content": None}]}, "not a string"),
        ([1, 2], "JSON object"),
    ],
)
def test_record_without_assistant_reply(tmp_path: Path, line: object, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record("a", "1")) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"bad\.jsonl:2: .*{problem}"):
        filter_dataset(path, tmp_path / "o.jsonl", FilterConfig())


def test_subsample() -> None:
    items = list(range(100))
    chosen = subsample(items, 20, seed=1)
    assert len(chosen) == 20 and chosen == sorted(chosen)
    assert chosen == subsample(items, 20, seed=1)
    assert subsample(items, None, seed=1) == items
    assert subsample(items, 500, seed=1) == items
    assert subsample(items, 0, seed=1) == []
    with pytest.raises(ValueError):
        subsample(items, -1, seed=1)


def test_config_is_documented_and_validated() -> None:
    assert undocumented_fields(FilterConfig) == []
    with pytest.raises(ConfigError, match="choices: none, claude, gpt, paper"):
        load_config(FilterConfig, overrides=["banned=evil"])
    with pytest.raises(ConfigError, match="max_value"):
        load_config(FilterConfig, overrides=["min_value=10", "max_value=5"])
    with pytest.raises(ConfigError, match="keep"):
        load_config(FilterConfig, overrides=["keep=0"])
    with pytest.raises(ConfigError, match="leakage_words"):
        load_config(FilterConfig, overrides=["leakage_words=['  ']"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(FilterConfig, overrides=["kep=3"])


def test_non_utf8_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.jsonl"
    path.write_bytes(json.dumps(record("a", "1")).encode() + b"\n\xff\xfe\x00garbage\n")
    with pytest.raises(DatasetFormatError, match=r"binary\.jsonl:2: not UTF-8 text"):
        filter_dataset(path, tmp_path / "o.jsonl", FilterConfig())


def test_stage_errors_are_sublearn_errors() -> None:
    assert issubclass(DatasetFormatError, DataError)
    assert issubclass(NotEnoughRecordsError, NotEnoughRowsError)
