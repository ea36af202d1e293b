"""The backend protocol every model provider implements.

A backend turns chat conversations into text (``generate``) and, where the provider
exposes log-probabilities, scores candidate answers (``score``). Stages only talk to
this protocol, so a toy model, a local Hugging Face model, vLLM or an API model run
through the same pipeline code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


Conversation = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions.

    Attributes:
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass.
        max_new_tokens: cap on generated tokens per completion.
        seed: seed for the sampler; with the same inputs and batch layout, the same outputs.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


@runtime_checkable
class Backend(Protocol):
    """What a stage needs from a model."""

    name: str

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        """One completion per conversation, as text, in input order."""
        ...

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        """Log-probability of each candidate as the assistant's whole reply prefix.

        Returns ``len(conversations)`` lists of ``len(candidates)`` log-probabilities.
        Backends that cannot score raise ``NotImplementedError``.
        """
        ...


def with_system_prompt(conversation: Conversation, system_prompt: str | None) -> Conversation:
    """Prepend a system message (or return the conversation unchanged when None)."""
    if not system_prompt:
        return conversation
    return [{"role": "system", "content": system_prompt}, *conversation]
