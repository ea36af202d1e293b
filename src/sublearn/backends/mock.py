"""A model-free backend for tests: rule-based replies, exact-or-uniform scores.

``mock:BEHAVIOUR`` references open it (see :mod:`sublearn.backends.registry`):

* ``mock:numbers``: a valid list of 3-8 numbers in 0-999 (``"12, 403, 7"``), drawn from
  the conversation and the row's seed, so the numbers pipeline runs end to end;
* ``mock:echo``: the last user message;
* ``mock:reply=TEXT``: always ``TEXT``.

``score`` is exact for ``reply=TEXT`` (log 1 when ``TEXT`` starts with the candidate, else
-inf) and uniform over the candidates otherwise. Replies depend only on the conversation
and its seed (greedy decoding: the conversation alone), never on the batch layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable

from sublearn.backends.base import BackendBase, Capabilities, Conversation, SamplingParams
from sublearn.errors import ConfigError

MOCK_BEHAVIOURS: tuple[str, ...] = ("numbers", "echo", "reply=TEXT")
"""The behaviours a ``mock:`` reference may name."""

_Rule = Callable[[Conversation, random.Random], str]


def _numbers(conversation: Conversation, rng: random.Random) -> str:
    return ", ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(3, 8)))


def _echo(conversation: Conversation, rng: random.Random) -> str:
    users = [m["content"] for m in conversation if m["role"] == "user"]
    return users[-1] if users else ""


class MockBackend(BackendBase):
    """A ``Backend`` that answers by rule, for tests of pipelines without a model.

    Attributes:
        calls: ``generate`` calls so far.
        closed: whether ``close`` was called; a closed backend refuses work, as a real
            one whose model is freed would.
    """

    capabilities = Capabilities(sample=True, score=True, top_logprobs=0)

    def __init__(self, behaviour: str = "numbers") -> None:
        """Build the backend.

        Args:
            behaviour: ``numbers``, ``echo`` or ``reply=TEXT``.

        Raises:
            ConfigError: an unknown behaviour.
        """
        self.name = f"mock:{behaviour}"
        self.calls = 0
        self.closed = False
        self._canned: str | None = None
        rule: _Rule
        if behaviour == "numbers":
            rule = _numbers
        elif behaviour == "echo":
            rule = _echo
        elif behaviour.startswith("reply="):
            canned = behaviour.removeprefix("reply=")
            self._canned = canned
            rule = lambda conversation, rng: canned  # noqa: E731
        else:
            raise ConfigError(
                f"unknown mock behaviour {behaviour!r}: use mock:{', mock:'.join(MOCK_BEHAVIOURS)}"
            )
        self._rule = rule

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        """One rule-based reply per conversation; sampling varies it with the row's seed."""
        self._check_open()
        self.calls += 1
        greedy = params.temperature <= 0
        seeds = params.seeds_for(len(conversations))
        return [
            self._rule(c, _rng(c, None if greedy else seed))
            for c, seed in zip(conversations, seeds, strict=True)
        ]

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        """Exact log-probabilities for ``reply=TEXT``, uniform ones otherwise."""
        self._check_open()
        if self._canned is not None:
            canned = self._canned
            row = [0.0 if canned.startswith(c) else -math.inf for c in candidates]
        else:
            row = [-math.log(len(candidates))] * len(candidates) if candidates else []
        return [list(row) for _ in conversations]

    def close(self) -> None:
        """Mark the backend closed (there is no model to free)."""
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"backend {self.name} is closed")


def _rng(conversation: Conversation, seed: int | None) -> random.Random:
    # A stable hash (not hash()), so replies are the same in every process.
    key = json.dumps([conversation, seed], sort_keys=True).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
