"""Fault injection and request counts: what tests set and read through ``/_admin``."""

from __future__ import annotations

import threading
from typing import Any

from sublearn.backends.openai_api import request_key
from tests.support.openai_server.protocol import ApiError, is_number


class Faults:
    """Injected failures, consumed as matching requests and jobs arrive.

    Rules (a list, replaced as a whole by ``POST /_admin/faults``):

    * ``{"path": PREFIX, "status": CODE, "retry_after": S, "delay": S, "times": N}``: the
      next ``N`` requests (default 1; ``null``: every one) whose path starts with
      ``PREFIX`` (default: every path) wait ``delay`` seconds, then get an error with
      status ``CODE`` and a ``Retry-After: S`` header, or, without ``status``, are
      answered normally after the delay.
    * ``{"fail_jobs": REASON, "times": N, "code": CODE}``: the next ``N`` fine-tuning jobs
      created (default 1) fail once running, with ``REASON`` as their error message and
      ``CODE`` (default ``invalid_training_file``) as its code.
    * ``{"job_delay": S, "times": N}``: jobs wait ``S`` seconds in ``running`` before
      training (every job unless ``times`` is given), so a client can be stopped mid-poll.
    """

    def __init__(self) -> None:
        """No rules."""
        self._lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []

    def set(self, rules: Any) -> int:
        """Replace the rules.

        Returns:
            How many rules are now active.

        Raises:
            ApiError: a malformed rule (400).
        """
        if isinstance(rules, dict) and "faults" in rules:
            rules = rules["faults"]
        if not isinstance(rules, list):
            raise ApiError(400, "expected a JSON list of fault rules")
        checked = [_check_rule(i, rule) for i, rule in enumerate(rules)]
        with self._lock:
            self.rules = checked
        return len(checked)

    def clear(self) -> None:
        """Drop every rule."""
        with self._lock:
            self.rules = []

    def _take(self, match: Any) -> dict[str, Any] | None:
        with self._lock:
            for rule in self.rules:
                if match(rule) and rule["times"] != 0:
                    if rule["times"] is not None:
                        rule["times"] -= 1
                    return dict(rule)
        return None

    def for_request(self, path: str) -> dict[str, Any] | None:
        """The request rule that applies to ``path`` (consumed), or None."""
        return self._take(lambda r: r["kind"] == "request" and path.startswith(r.get("path") or ""))

    def for_new_job(self) -> dict[str, Any] | None:
        """The ``fail_jobs`` rule that applies to a job being created (consumed), or None."""
        return self._take(lambda r: r["kind"] == "fail_jobs")

    def job_delay(self) -> float:
        """Seconds a job starting now waits in ``running`` (a ``job_delay`` rule, consumed)."""
        rule = self._take(lambda r: r["kind"] == "job_delay")
        return float(rule["job_delay"]) if rule else 0.0


def _check_rule(index: int, rule: Any) -> dict[str, Any]:
    def bad(why: str) -> ApiError:
        return ApiError(400, f"fault rule {index}: {why}", param="faults")

    if not isinstance(rule, dict):
        raise bad("expected an object")
    rule = dict(rule)
    times = rule.get("times", 1 if "job_delay" not in rule else None)
    if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
        raise bad("times must be a positive integer or null")
    rule["times"] = times
    if "fail_jobs" in rule:
        if not isinstance(rule["fail_jobs"], str) or not rule["fail_jobs"]:
            raise bad("fail_jobs must be the failure message")
        rule.setdefault("code", "invalid_training_file")
        return {**rule, "kind": "fail_jobs"}
    if "job_delay" in rule:
        if not is_number(rule["job_delay"]) or rule["job_delay"] < 0:
            raise bad("job_delay must be a number of seconds")
        return {**rule, "kind": "job_delay"}
    status = rule.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise bad("status must be an HTTP error status (400-599)")
    for key in ("delay", "retry_after"):
        if key in rule and (not is_number(rule[key]) or rule[key] < 0):
            raise bad(f"{key} must be a non-negative number of seconds")
    if status is None and "delay" not in rule:
        raise bad("give a status, a delay, fail_jobs or job_delay")
    if "path" in rule and not isinstance(rule["path"], str):
        raise bad("path must be a path prefix such as /v1/chat/completions")
    return {**rule, "kind": "request"}


class Stats:
    """Request counts for tests (``GET /_admin/stats``).

    ``requests`` counts every request but ``/_admin`` ones by ``"METHOD /path"`` (no
    query), faulted and unauthenticated ones included; ``completions`` counts the chat
    completions actually answered, by :func:`request_key` of their body.
    """

    def __init__(self) -> None:
        """All counts zero."""
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every count."""
        with self._lock:
            self.requests: dict[str, int] = {}
            self.completions: dict[str, int] = {}
            self.counts = {"jobs_created": 0, "files_uploaded": 0, "faults_served": 0}

    def request(self, method: str, path: str) -> None:
        """Count a request (faulted ones too)."""
        with self._lock:
            key = f"{method} {path}"
            self.requests[key] = self.requests.get(key, 0) + 1

    def completion(self, body: Any) -> None:
        """Count an answered chat completion by its body's hash."""
        with self._lock:
            key = request_key(body)
            self.completions[key] = self.completions.get(key, 0) + 1

    def add(self, name: str) -> None:
        """Add one to ``jobs_created``, ``files_uploaded`` or ``faults_served``."""
        with self._lock:
            self.counts[name] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts as JSON."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "completions": dict(self.completions),
                **self.counts,
            }


def fault_error(rule: dict[str, Any]) -> ApiError:
    status = int(rule["status"])
    headers = {}
    if rule.get("retry_after") is not None:
        headers["Retry-After"] = f"{float(rule['retry_after']):g}"
    if status == 429:
        return ApiError(
            429,
            "Rate limit reached (injected fault).",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    return ApiError(
        status, f"Injected fault (status {status}).", type="server_error", headers=headers
    )
