"""JSONL: datasets read with errors naming file and line; the append-only log's policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sublearn.errors import DataError
from sublearn.jsonl import AppendLog, read_jsonl


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


# --- the append-only log -------------------------------------------------------------


def test_appended_values_read_back_in_order(tmp_path: Path) -> None:
    log = AppendLog(tmp_path / "sub" / "log.jsonl", ensure_ascii=False)
    assert list(log.read()) == []
    for value in ({"a": 1}, ["é", None], "x"):
        log.append(value)
    assert list(log.read()) == [{"a": 1}, ["é", None], "x"]
    assert (tmp_path / "sub" / "log.jsonl").read_text(encoding="utf-8").count("\n") == 3
    assert list(AppendLog(log.path).read()) == list(log.read())


def test_durable_logs_sync_every_line_and_others_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    durable = AppendLog(tmp_path / "d.jsonl")
    durable.append(1)
    durable.append(2)
    assert len(synced) == 2
    AppendLog(tmp_path / "f.jsonl", durable=False).append(1)
    assert len(synced) == 2


def test_a_value_that_is_not_json_writes_nothing(tmp_path: Path) -> None:
    log = AppendLog(tmp_path / "log.jsonl")
    log.append(1)
    with pytest.raises(TypeError):
        log.append({"x": object()})
    assert list(log.read()) == [1]


@pytest.mark.parametrize("cut", [1, 7, 12])
def test_a_line_cut_mid_write_is_skipped_and_the_next_append_is_whole(
    tmp_path: Path, cut: int
) -> None:
    """A kill mid-write leaves a torn last line: reading skips it, appending starts afresh."""
    path = tmp_path / "log.jsonl"
    AppendLog(path).append({"n": 1})
    AppendLog(path).append({"n": 2, "text": "a longer line"})
    data = path.read_bytes()
    second = data.index(b"\n") + 1
    path.write_bytes(data[: second + cut])  # the second line loses its end
    reopened = AppendLog(path)
    assert list(reopened.read()) == [{"n": 1}]
    reopened.append({"n": 3})
    reopened.append({"n": 4})
    assert list(AppendLog(path).read()) == [{"n": 1}, {"n": 3}, {"n": 4}]


def test_a_killed_writer_leaves_only_whole_lines(tmp_path: Path) -> None:
    """SIGKILL a process appending large lines: every line read back is one it wrote."""
    path = tmp_path / "log.jsonl"
    script = (
        "import sys; from pathlib import Path; from sublearn.jsonl import AppendLog\n"
        "log = AppendLog(Path(sys.argv[1]), durable=False)\n"
        "i = 0\n"
        "while True:\n"
        "    log.append({'i': i, 'pad': 'x' * 200_000}); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    try:
        deadline = time.monotonic() + 60
        while (not path.exists() or path.stat().st_size < 2_000_000) and proc.poll() is None:
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    values = list(AppendLog(path).read())
    assert len(values) >= 5
    assert [v["i"] for v in values] == list(range(len(values)))
    assert all(v["pad"] == "x" * 200_000 for v in values)
    # Whatever the kill left, the next append reads back after what was whole.
    AppendLog(path).append({"i": "after"})
    assert list(AppendLog(path).read())[-1] == {"i": "after"}


def test_appenders_in_parallel_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = AppendLog(path, durable=False)

    def write(t: int) -> None:
        other = AppendLog(path, durable=False)  # separate handles, as separate runs have
        for i in range(100):
            (log if i % 2 else other).append({"t": t, "i": i, "pad": str(t) * 5000})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    values = list(log.read())
    assert sorted((v["t"], v["i"]) for v in values) == [
        (t, i) for t in range(4) for i in range(100)
    ]
    assert all(v["pad"] == str(v["t"]) * 5000 for v in values)


def test_truncate_starts_the_log_over(tmp_path: Path) -> None:
    log = AppendLog(tmp_path / "log.jsonl")
    log.append(1)
    log.truncate()
    assert list(log.read()) == []
    log.append(2)
    assert list(log.read()) == [2]
