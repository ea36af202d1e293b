"""JSONL files: datasets read strictly, and append-only logs written line by line.

* :func:`read_jsonl` reads a dataset; a bad line is an error naming the file and line.
* :class:`AppendLog` is the one append-only log every resumable record uses (the judge
  cache, the OpenAI-compatible request log, fine-tune job histories, training curves).

The log's policy, which every user inherits:

* **Append.** One line is one ``write(2)`` of the whole encoded line on a descriptor
  opened with ``O_APPEND``, so concurrent appenders (threads or processes) never
  interleave inside a line. A ``durable`` log then syncs the file (``fsync``) before
  ``append`` returns (a killed run loses at most the line being written); a non-durable
  one leaves the line to the page cache (it survives a killed process, not a power cut).
* **Torn lines.** A kill mid-write can leave a last line without its newline. Reading
  skips any line that is not valid JSON; the first append after opening starts a new
  line if the file does not end with one, so a torn fragment never swallows a good line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sublearn.errors import DataError


def read_jsonl(path: Path, error: type[DataError] = DataError) -> Iterator[tuple[int, str, Any]]:
    """Parse a JSONL file line by line, skipping blank lines.

    Args:
        path: the file (UTF-8, one JSON value per line).
        error: the DataError subclass to raise, so a stage can keep its own error type.

    Yields:
        ``(line number, the line stripped of surrounding whitespace, the parsed value)``.

    Raises:
        DataError: (of type ``error``) on a line that is not valid JSON or a file that is
            not UTF-8 text, naming ``path:line``.
    """
    # Binary reading, decoded line by line: a text stream decodes in chunks, so its
    # error would not say which line holds the bad bytes.
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise error(
                    f"{path}:{lineno}: not UTF-8 text ({err.reason}); expected JSONL, "
                    "one JSON object per line"
                ) from None
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            yield lineno, line, value


class AppendLog:
    """An append-only JSONL file (see the module docstring for its write and read policy).

    Attributes:
        path: the file (created, with its folder, on the first append).
        durable: whether each append is ``fsync``-ed before it returns.
    """

    def __init__(self, path: Path, *, durable: bool = True, ensure_ascii: bool = True) -> None:
        """A log at ``path``; nothing is read or written yet.

        Args:
            path: the file.
            durable: ``fsync`` after every line (answers that cost money or time to get
                again); False: flushed to the OS only (per-step training curves).
            ensure_ascii: ``json.dumps``'s setting (False writes non-ASCII text as is).
        """
        self.path = path
        self.durable = durable
        self._ensure_ascii = ensure_ascii
        self._lock = threading.Lock()
        self._checked_end = False

    def append(self, value: Any) -> None:
        """Write ``value`` as one JSON line (synced to disk first when ``durable``).

        Raises:
            TypeError: ``value`` is not JSON-serializable (nothing is written).
        """
        line = (json.dumps(value, ensure_ascii=self._ensure_ascii) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if not self._checked_end:
                    line = self._after_torn_line(fd) + line
                    self._checked_end = True
                _write_all(fd, line)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def truncate(self) -> None:
        """Empty the log (a retried run that starts over), creating it if missing."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")
            self._checked_end = True

    def read(self) -> Iterator[Any]:
        """The logged values in order; nothing when the file does not exist.

        Blank lines and lines that are not UTF-8 JSON (a torn line of a killed write) are
        skipped: what they held is simply not in the log.
        """
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    text = raw.decode("utf-8").strip()
                    if text:
                        yield json.loads(text)
                except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
                    continue

    def _after_torn_line(self, fd: int) -> bytes:
        """``b"\\n"`` when the file's last byte is not a newline (a torn line), else ``b""``."""
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        return b"" if os.pread(fd, 1, size - 1) == b"\n" else b"\n"


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole buffer in one write; the loop only guards the
    # partial writes POSIX allows (a full disk or a signal), which then stay one line.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
