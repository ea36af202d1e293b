"""Hugging Face backend: local folders or hub ids through ``AutoModelForCausalLM``.

Generation is batched with left padding; scoring computes the log-probability of
candidate replies by teacher forcing. Adapter folders (PEFT LoRA) are loaded on top of
their base model and merged, so students trained with LoRA evaluate like any model.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants

from sublearn.backends.base import Capabilities, Conversation, SamplingParams, TokenScore
from sublearn.backends.hf_constrained import NumberConstraint, TokenTable, token_texts
from sublearn.backends.hf_scoring import (
    candidate_logprobs,
    reply_token_scores,
    right_pad,
)
from sublearn.errors import ModelError
from sublearn.prompts.number_grammar import NumberGrammar
from sublearn.runtime import resolve_device

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(ModelError):
    """A model path that is neither a local model folder nor a loadable hub id."""


# A folder with none of these has no tokenizer that AutoTokenizer could load.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


def check_model_reference(model: str | Path) -> None:
    """Fail early, with a clear message, on a model reference that cannot be loaded.

    Cheap (no weights are read), so a planner can check every model before any work.

    Args:
        model: a local folder or a hub id such as ``Qwen/Qwen2.5-7B-Instruct``.

    Raises:
        ModelNotFoundError: the folder is missing or has no ``config.json`` /
            ``adapter_config.json``, the string is neither a path nor a hub id, or the
            hub id is not in the local cache while downloads are off.
        ModelError: the folder has no tokenizer files.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ModelNotFoundError(
                f"{path} exists but is not a model folder (no config.json or adapter_config.json)"
            )
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise ModelError(
                f"model folder {path} has no tokenizer files (looked for "
                f"{', '.join(_TOKENIZER_FILES)}); save the tokenizer into it with "
                "tokenizer.save_pretrained(folder)"
            )
        return
    if str(model).startswith((".", "/", "~")) or not _HUB_ID.match(str(model)):
        raise ModelNotFoundError(
            f"model {str(model)!r} not found: no such folder, and it is not a hub id "
            "(org/name). For the embedded toy models, run `sublearn toy build` first."
        )
    if hub_constants.is_offline_mode() and not _in_hub_cache(str(model)):
        raise ModelNotFoundError(_offline_message(str(model)))


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds a model or adapter config of ``repo_id``."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, name), str)
        for name in ("config.json", "adapter_config.json")
    )


def _offline_message(model: str) -> str:
    return (
        f"model {model!r} is not in the local Hugging Face cache ({hub_constants.HF_HUB_CACHE}) "
        "and downloads are off (HF_HUB_OFFLINE=1): download it where there is a network "
        f"(`hf download {model}`) or pass a local model folder"
    )


def load_model_and_tokenizer(
    model: str | Path, device: str = "auto", dtype: str = "auto", trainable: bool = False
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, merging a LoRA adapter if the folder holds one.

    The tokenizer loads first: it is cheap, and a model without a usable chat template
    fails before its weights are read.

    Args:
        model: local folder (full model or PEFT adapter) or hub id.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        trainable: leave the model in train mode (fine-tuning) instead of eval mode.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelNotFoundError: the model cannot be found (see :func:`check_model_reference`).
        ModelError: its tokenizer or weights cannot be loaded, or it has no chat template.
        DeviceError: the device is not available.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_reference(model)
    device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    path = Path(model).expanduser()
    name = str(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"could not load the tokenizer of model {name!r}: {_first_line(err)}"
        ) from err
    if tokenizer.chat_template is None:
        raise ModelError(
            f"the tokenizer of model {name!r} has no chat template (no chat_template.jinja, "
            "and none in tokenizer_config.json); sublearn needs chat (instruct) models"
        )
    lm: Any
    try:
        if (path / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            peft_model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
            lm = peft_model.merge_and_unload()
        else:
            lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        if hub_constants.is_offline_mode() and not path.exists():
            raise ModelNotFoundError(_offline_message(name)) from err
        raise ModelError(
            f"could not load model {name!r}: {_first_line(err)}. Offline runs need the model "
            "in the local Hugging Face cache or a local folder."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.to(device)
    lm.train(trainable)
    return lm, tokenizer


def _first_line(err: BaseException) -> str:
    """Library errors run to many lines of advice; the first says what went wrong."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory on GPUs; on CPUs it is slower than fp32 for small models.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _GumbelMax:
    """Turns greedy decoding into sampling: argmax(logits + Gumbel noise) ~ softmax(logits).

    The Gumbel-max trick draws exactly from the categorical distribution of the (already
    temperature-scaled, top-p-masked) logits. It replaces ``torch.multinomial``, which on
    a CPU took a third of the time of batched generation with a small model: uniform
    draws cost about a fifth as much (float32 uniforms cap the noise at about 16.6, a
    tail of probability 6e-8).

    Every row draws its noise from its own generator, seeded with that row's seed, one
    vocabulary-sized draw per step, so a row's sample does not depend on which rows share
    its batch, on their order or on the batch size. The B small draws per step cost
    about 0.5 ms more than one batched draw at B=256 on a CPU (a few percent of a toy
    model's step); drawing several steps per call was slower, as the block left the cache.
    """

    def __init__(self, row_seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        """Seed one generator per row.

        Args:
            row_seeds: one seed per batch row, in batch order.
            device: where the logits live (the noise is drawn there).
        """
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in row_seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(
                f"{scores.shape[0]} rows of logits for {len(self.generators)} row seeds"
            )
        noise = torch.empty(scores.shape, device=scores.device)  # (B, V)
        for row, generator in zip(noise, self.generators, strict=True):
            row.uniform_(generator=generator)  # (V,) uniforms in [0, 1)
        gumbel = noise.log_().neg_().log_().neg_()  # -log(-log(U)) ~ Gumbel(0, 1)
        # Masked (-inf) logits stay -inf and are never chosen.
        return scores.float() + gumbel  # (B, V)


class HFBackend:
    """A ``Backend`` over a local or hub Hugging Face causal LM."""

    # Exact scores by teacher forcing; any number of top first-token log-probabilities
    # (next_token_logprobs), reported as the API maximum.
    capabilities = Capabilities(
        sample=True, score=True, top_logprobs=20, token_scores=True, constrain=True
    )
    model: Any  # a transformers causal LM; None once closed

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
    ) -> None:
        """Load the model.

        Args:
            model: local folder (full model or LoRA adapter) or hub id.
            device: ``auto``, ``cpu`` or ``cuda[:N]``.
            dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
            batch_size: sequences per forward pass.
        """
        self.name = str(model)
        self.model, self.tokenizer = load_model_and_tokenizer(model, device=device, dtype=dtype)
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size

    def merge_adapter(self, adapter: str | Path) -> None:
        """Load a PEFT (LoRA) adapter onto the loaded model and merge it into the weights.

        For an adapter on a base other than the one it records (e.g. a hub id it was
        trained on, now a local copy). The adapter folder's tokenizer, when it has one
        with a chat template, replaces the base's.

        Raises:
            ModelError: the adapter cannot be loaded onto this model.
        """
        from peft import PeftModel
        from transformers import AutoTokenizer

        path = Path(adapter).expanduser()
        where = str(path) if path.exists() else str(adapter)
        try:
            peft_model = PeftModel.from_pretrained(self.model, where)
            tokenizer = (
                AutoTokenizer.from_pretrained(where)
                if (path / "tokenizer_config.json").is_file()
                else None
            )
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as err:
            # Malformed or mismatched adapter configs surface as any of these from peft.
            raise ModelError(
                f"could not load adapter {str(adapter)!r} onto model {self.name!r}: "
                f"{_first_line(err)}"
            ) from err
        self.model = peft_model.merge_and_unload().to(self.device).eval()
        if tokenizer is not None and tokenizer.chat_template is not None:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self.tokenizer = tokenizer
        self.name = f"{self.name}+{adapter}"

    def close(self) -> None:
        """Free the model's memory (and CUDA's cached blocks); the backend is unusable after."""
        if self.model is None:
            return
        on_cuda = self.device.type == "cuda"
        self.model = None
        # Drop reference cycles now, so the memory is back before the next model loads.
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()

    def __enter__(self) -> HFBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _prompt_ids(self, conversation: Conversation) -> list[int]:
        rendered = self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        # The template already holds any BOS token; adding special tokens would double it.
        return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        """Sample one reply per conversation (greedy when temperature is 0).

        Conversations are sorted by prompt length and batched in that order, to waste
        little compute on padding. Each batch is decoded by :meth:`_decode_batch`, which
        drops finished rows from the batch and its KV cache, so later steps run on the
        live rows only. Each conversation is sampled with its own seed
        (``params.seeds_for``), so its reply depends on the model, its prompt and its seed
        only: not on the batch size, on the other conversations of the call or on their
        order (up to the float rounding of batched matrix products, which may in rare
        near-ties flip a token).

        Args:
            conversations: chat turns ending with a user turn.
            params: sampling settings; ``row_seeds`` (or ``seed`` and each conversation's
                position) seed the conversations; ``grammars`` constrain their replies
                (:class:`~sublearn.backends.hf_constrained.NumberConstraint`).

        Returns:
            One stripped reply per conversation, in input order.
        """
        seeds = params.seeds_for(len(conversations))
        grammars = params.grammars_for(len(conversations))
        prompts = [self._prompt_ids(c) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str] = [""] * len(prompts)
        for idx in _chunks(order, self.batch_size):
            texts = self._decode_batch(
                [prompts[i] for i in idx],
                [seeds[i] for i in idx],
                params,
                [grammars[i] for i in idx],
            )
            for i, text in zip(idx, texts, strict=True):
                outputs[i] = text.strip()
        return outputs

    def _processors(
        self,
        row_seeds: Sequence[int],
        params: SamplingParams,
        grammars: Sequence[NumberGrammar | None] = (),
    ) -> list[Any]:
        """The grammar mask, temperature, top-p and Gumbel noise, in ``model.generate``'s order.

        The mask comes first, so that temperature and top-p act on the model's
        distribution renormalized over the allowed tokens.
        """
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        processors: list[Any] = []
        if any(g is not None for g in grammars):
            processors.append(
                NumberConstraint(self._token_table(), grammars, params.max_new_tokens)
            )
        if params.temperature > 0:
            # Sampling as greedy decoding over Gumbel-perturbed logits (see _GumbelMax).
            processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
            processors.append(_GumbelMax(row_seeds, self.device))
        return processors

    def _token_table(self) -> TokenTable:
        """The tokenizer's token texts for constrained decoding, read on first use."""
        table = getattr(self, "_table", None)
        if table is None or table.eos_id != self.tokenizer.eos_token_id:
            table = TokenTable(token_texts(self.tokenizer), self.tokenizer.eos_token_id)
            self._table = table
        return table

    def _decode_batch(
        self,
        prompts: list[list[int]],
        row_seeds: Sequence[int],
        params: SamplingParams,
        grammars: Sequence[NumberGrammar | None] = (),
    ) -> list[str]:
        """Decode one batch with a KV cache, dropping each row from it once it has ended.

        The same computation per row as ``model.generate`` with greedy search over the
        processed logits (:func:`_generate_batch_hf`): left-padded prefill with positions
        counted from each row's first real token, then one token per step. A row that
        emits the end-of-sequence token leaves the batch: its cache entries, mask row,
        position and noise generator are dropped, so later steps cost only the live rows.

        Returns:
            The decoded (unstripped) reply of each prompt, in batch order.
        """
        from transformers import DynamicCache

        eos = self.tokenizer.eos_token_id
        processors = self._processors(row_seeds, params, grammars)
        gumbel = next((p for p in processors if isinstance(p, _GumbelMax)), None)
        constraint = next((p for p in processors if isinstance(p, NumberConstraint)), None)
        ids, mask = self._left_pad(prompts)  # (B, T) each
        positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)  # (B, T)
        cache = DynamicCache()
        live = torch.arange(len(prompts), device=self.device)  # batch rows still decoding
        replies: list[list[int]] = [[] for _ in prompts]
        step_ids = ids
        for step in range(params.max_new_tokens):
            logits = self.model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits  # (L, 1, V)
            scores = logits[:, -1, :].to(dtype=torch.float32)  # (L, V)
            for processor in processors:
                scores = processor(step_ids, scores)
            tokens = scores.argmax(-1)  # (L,)
            token_list = tokens.tolist()
            ended = []
            for row, token in zip(live.tolist(), token_list, strict=True):
                replies[row].append(token)
                ended.append(token == eos)
            if step + 1 == params.max_new_tokens:
                break
            if any(ended):
                keep = [j for j, done in enumerate(ended) if not done]
                if not keep:
                    break
                keep_t = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(keep_t)
                live, tokens, mask = live[keep_t], tokens[keep_t], mask[keep_t]
                positions = positions[keep_t]
                if gumbel is not None:
                    gumbel.generators = [gumbel.generators[j] for j in keep]
                if constraint is not None:
                    constraint.keep(keep)
            step_ids = tokens[:, None]  # (L, 1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)  # (L, t + 1)
            positions = positions[:, -1:] + 1  # (L, 1)
        return self.tokenizer.batch_decode(replies, skip_special_tokens=True)

    def _generate_batch_hf(
        self,
        prompts: list[list[int]],
        row_seeds: Sequence[int],
        params: SamplingParams,
        grammars: Sequence[NumberGrammar | None] = (),
    ) -> list[str]:
        """One batch through ``model.generate``: the reference :meth:`_decode_batch` matches.

        Finished rows stay in the batch (emitting padding) until the longest row ends.
        """
        from transformers import LogitsProcessorList

        ids, mask = self._left_pad(prompts)
        generated = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            do_sample=False,
            # The model's own sampling defaults (generation_config.json) do not apply.
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=LogitsProcessorList(self._processors(row_seeds, params, grammars)),
        )  # (B, T + new)
        return self.tokenizer.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True)

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        """Sum of token log-probabilities of each candidate as the start of the reply.

        Each conversation's prompt and the candidates' shared first tokens (a lead-in)
        run once, from a cache (:func:`~sublearn.backends.hf_scoring.candidate_logprobs`).
        A candidate the tokenizer can only spell with its unknown token cannot be produced
        as written, so it scores ``-inf`` instead of the probability of ``<unk>``.
        """
        unk = self.tokenizer.unk_token_id
        cand_ids: list[list[int] | None] = []
        for c in candidates:
            ids = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            cand_ids.append(ids if ids and (unk is None or unk not in ids) else None)
        prompts = [self._prompt_ids(c) for c in conversations]
        return candidate_logprobs(self.model, prompts, cand_ids, self.batch_size)

    @torch.inference_mode()
    def next_token_logprobs(
        self, conversations: list[Conversation], k: int
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` tokens of the assistant reply's first position, with log-probabilities.

        The prompt is built as in :meth:`score` and :meth:`generate` (chat template with
        the generation prompt); the distribution is the model's log-softmax at temperature
        1, so a one-token candidate's entry equals its :meth:`score`.

        Args:
            conversations: chat turns ending with a user turn.
            k: how many tokens to return per conversation (at most the vocabulary size).

        Returns:
            Per conversation, ``k`` pairs ``(token text, log-probability)`` sorted by
            decreasing log-probability; the text is ``tokenizer.decode([id])`` (special
            tokens included, so the end-of-sequence token appears under its own name).
        """
        prompts = [self._prompt_ids(c) for c in conversations]
        results: list[list[tuple[str, float]]] = [[] for _ in prompts]
        pad = self.tokenizer.pad_token_id
        for batch in _chunks(list(range(len(prompts))), self.batch_size):
            # Right padding with the default positions, exactly as score() computes them.
            ids, mask = right_pad([prompts[i] for i in batch], pad)
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits  # (B, T, V)
            last = torch.tensor([len(prompts[i]) - 1 for i in batch], device=logits.device)
            logp = torch.log_softmax(logits[torch.arange(len(batch)), last].float(), dim=-1)
            top = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)  # (B, k) each
            for row, i in enumerate(batch):
                results[i] = [
                    (self.tokenizer.decode([int(t)]), float(v))
                    for v, t in zip(top.values[row], top.indices[row], strict=True)
                ]
        return results

    def token_logprobs(
        self, conversations: list[Conversation], replies: list[str]
    ) -> list[list[TokenScore]]:
        """Per reply, each token's log-probability and the model's greedy choice there.

        The prompt is built as in :meth:`score` (chat template with the generation
        prompt) and the reply tokenized on its own, so a reply's summed log-probability
        equals ``score(conversation, [reply])``.

        Args:
            conversations: chat turns ending with a user turn.
            replies: one reply per conversation.

        Returns:
            One list of :class:`TokenScore` per reply, in reply order.

        Raises:
            ValueError: ``conversations`` and ``replies`` differ in length.
        """
        if len(conversations) != len(replies):
            raise ValueError(f"{len(conversations)} conversations for {len(replies)} replies")
        prompts = [self._prompt_ids(c) for c in conversations]
        return reply_token_scores(self.model, self.tokenizer, prompts, replies, self.batch_size)
