"""The backend protocol every model provider implements.

A backend turns chat conversations into text (``generate``) and, where the provider
exposes log-probabilities, scores candidate answers (``score``). Stages only talk to
this protocol, so a toy model, a local Hugging Face model, vLLM or an API model run
through the same pipeline code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

    from sublearn.prompts.number_grammar import NumberGrammar


class Message(TypedDict):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


Conversation = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions.

    Every conversation of a ``generate`` call is sampled with a seed of its own, so that
    its reply depends only on the model, the conversation and that seed, never on how
    the backend batches the call. The seeds are ``row_seeds`` when given, else
    ``row_seed(seed, i)`` for the conversation at position ``i`` of the call.

    Attributes:
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass.
        max_new_tokens: cap on generated tokens per completion.
        seed: base seed of the per-conversation seeds when ``row_seeds`` is None.
        row_seeds: one seed per conversation of the call, in order (e.g. derived from a
            row's index in a whole dataset, so that a resumed run samples as an
            uninterrupted one); overrides ``seed``.
        grammars: one reply grammar (or None) per conversation of the call: constrained
            decoding keeps each reply in its number prompt's format. None: unconstrained.
            A backend that cannot constrain raises instead of ignoring it.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    row_seeds: tuple[int, ...] | None = None
    grammars: tuple[NumberGrammar | None, ...] | None = None

    def grammars_for(self, n: int) -> tuple[NumberGrammar | None, ...]:
        """The reply grammar of each of the ``n`` conversations of a call (None: free).

        Raises:
            ValueError: ``grammars`` is set and does not hold ``n`` entries.
        """
        if self.grammars is None:
            return (None,) * n
        if len(self.grammars) != n:
            raise ValueError(f"{len(self.grammars)} grammars for {n} conversations")
        return self.grammars

    def seeds_for(self, n: int) -> tuple[int, ...]:
        """The seed of each of the ``n`` conversations of a call.

        Raises:
            ValueError: ``row_seeds`` is set and does not hold ``n`` seeds.
        """
        if self.row_seeds is None:
            return tuple(row_seed(self.seed, i) for i in range(n))
        if len(self.row_seeds) != n:
            raise ValueError(f"{len(self.row_seeds)} row seeds for {n} conversations")
        return self.row_seeds


def row_seed(seed: int, index: int) -> int:
    """A 63-bit seed for row ``index`` of a run seeded with ``seed``.

    A hash rather than arithmetic such as ``seed * K + index``, so that distinct
    ``(seed, index)`` pairs never share a seed in practice.
    """
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so a stage can check its needs before any model loads.

    Attributes:
        sample: ``generate`` samples replies.
        score: ``score`` returns exact log-probabilities of candidate replies.
        top_logprobs: how many top next-token log-probabilities the backend can report
            per position (0 if none).
        token_scores: ``token_logprobs`` scores a given reply token by token (a local
            model; chat APIs that cannot echo a reply's log-probabilities cannot).
        constrain: ``generate`` honours ``SamplingParams.grammars`` (constrained number
            decoding); a backend without it cannot write constrained data.
    """

    sample: bool = True
    score: bool = False
    top_logprobs: int = 0
    token_scores: bool = False
    constrain: bool = False


@dataclass(frozen=True)
class TokenScore:
    """One reply token under a model: what it is, where it is, how likely it was.

    Attributes:
        text: the token as the tokenizer decodes it alone.
        start: offset of its first character in the reply.
        end: offset after its last character in the reply.
        logprob: log-probability of this token at this position given everything before.
        top: the model's most likely token at this position (greedy choice), decoded.
        top_logprob: that token's log-probability.
    """

    text: str
    start: int
    end: int
    logprob: float
    top: str
    top_logprob: float


@runtime_checkable
class Backend(Protocol):
    """What a stage needs from a model.

    A backend holds its model until ``close()`` (or the end of a ``with`` block), so a
    pipeline can keep one model resident at a time.
    """

    name: str
    capabilities: Capabilities

    def close(self) -> None:
        """Free the model (memory, GPU memory, connections); the backend is unusable after."""
        ...

    def __enter__(self) -> Backend: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        """One completion per conversation, as text, in input order."""
        ...

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        """Log-probability of each candidate as the assistant's whole reply prefix.

        Returns ``len(conversations)`` lists of ``len(candidates)`` log-probabilities.
        Backends that cannot score raise ``NotImplementedError``.
        """
        ...


@runtime_checkable
class TokenScorer(Protocol):
    """A backend that scores given replies token by token (``capabilities.token_scores``)."""

    def token_logprobs(
        self, conversations: list[Conversation], replies: list[str]
    ) -> list[list[TokenScore]]:
        """Per reply, the log-probability of each of its tokens given the conversation.

        Returns one list per conversation, one :class:`TokenScore` per reply token in
        order (the end-of-turn token excluded), with character offsets into the reply.
        """
        ...


_B = TypeVar("_B", bound="BackendBase")


class BackendBase:
    """Defaults for a backend that holds nothing to free (fakes, wrappers): subclass it.

    Declares sampling-only capabilities, a ``close`` that does nothing and the
    context-manager methods that call ``close``; override what differs.
    """

    capabilities: Capabilities = Capabilities()

    def close(self) -> None:
        """Nothing to free."""

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def with_system_prompt(conversation: Conversation, system_prompt: str | None) -> Conversation:
    """Prepend a system message (or return the conversation unchanged when None)."""
    if not system_prompt:
        return conversation
    return [{"role": "system", "content": system_prompt}, *conversation]
