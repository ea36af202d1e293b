"""One HTML page per view, self-contained: the data travels inside it as JSON.

The same template renders the index of a folder, a run, a sweep and an audit; the page
draws itself with a little inline JavaScript, so it needs no server and no network
(figures are inlined as data URIs).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

_TEMPLATE = Path(__file__).with_name("template.html")


def render(data: dict[str, Any], title: str) -> str:
    """The page for ``data`` (a bundle from :mod:`sublearn.view.data` with its ``kind``).

    Args:
        data: JSON-ready; NaN and infinities become null.
        title: the browser tab's title.
    """
    payload = json.dumps(_finite(data), allow_nan=False)
    # Inside <script>, "</" could close the element early; "<\/" is the same JSON string.
    payload = payload.replace("</", "<\\/")
    template = _TEMPLATE.read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: JavaScript's JSON.parse rejects them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
