"""What every evaluation kind is asked: one request type for all of them.

An evaluation kind is a function ``(EvalRequest) -> EvalResult`` registered in
:data:`sublearn.evaluation.kinds.EVALUATIONS`. The request holds everything a kind may
read; each kind reads what it needs (stories and choice read ``targets``, freeform
``judge``), so no kind has to accept arguments it does not use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from sublearn.backends.base import Backend, Message
    from sublearn.judges.protocol import Judge

C = TypeVar("C")
"""The kind's config class (e.g. ``StoriesEvalConfig``)."""


@dataclass(frozen=True)
class EvalRequest(Generic[C]):
    """One evaluation of one model.

    Attributes:
        backend: the model.
        cfg: the kind's settings (one member of ``EvaluationKind``); its ``type`` picks
            the kind.
        targets: trait words (preference, stories and choice score them).
        judge: the judge of free-form answers (freeform needs one).
        system_prompt: a system message put first in every conversation.
        context: prior chat turns put before every question (in-context learning).
    """

    backend: Backend
    cfg: C
    targets: Sequence[str] = ()
    judge: Judge | None = None
    system_prompt: str | None = None
    context: Sequence[Message] | None = None
