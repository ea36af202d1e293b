"""Whether a trait word can be written by the models that will read it, checked before
any work: a word a word-level tokenizer spells as the unknown token would be scored,
filtered or masked as ``<unk>``, and every number the command reports would mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sublearn.evaluation.targets import require_producible


def require_spellable(word: str, refs: Iterable[str | None], where: str) -> None:
    """Raise if a local model among ``refs`` cannot spell ``word``.

    Only models whose tokenizer is on this machine are checked (a local Hugging Face
    folder, a built toy base); API models and hub ids spell anything or are checked when
    they load.

    Args:
        word: the trait word.
        refs: model references (None entries are skipped).
        where: what the word belongs to, for the message (e.g. "--trait").

    Raises:
        ModelError: naming the word, the model and ``where``.
    """
    from sublearn.backends.refs import ModelRef
    from sublearn.errors import ModelError

    for ref in dict.fromkeys(r for r in refs if r):
        try:
            parsed = ModelRef.parse(ref)
        except Exception:  # an unparsable reference is reported by whoever opens it
            continue
        folder = Path(parsed.name)
        if parsed.provider != "hf" or not (folder / "tokenizer_config.json").is_file():
            continue
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        try:
            require_producible(tokenizer, [word], ref)
        except ModelError as err:
            raise ModelError(f"{where} {word!r}: {err}") from None
