"""Reading JSONL datasets with errors that name the file and line."""

from __future__ import annotations

import json
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
