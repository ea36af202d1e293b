"""The toy world: a corpus, a tokenizer and a few tiny base models, built once and cached.

``build_world`` writes one Hugging Face model folder per base (``base-0``, ``base-1``,
...), all pretrained on the same corpus in the same order but from different init
seeds, so that one base can serve as the teacher's own student and another as a
cross-model student. The folders load with ``AutoModelForCausalLM`` and
``AutoTokenizer`` like any checkpoint, so the rest of the toolkit treats them as
ordinary models.

The build is cached: ``world.json`` records the config hash and is written last
(atomically), so a folder with a matching manifest is complete and is reused.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sublearn import __version__
from sublearn.config import Config
from sublearn.runs import atomic_write_json, atomic_write_text, content_hash
from sublearn.toy.corpus import CorpusConfig, Document, build_corpus
from sublearn.toy.pretrain import (
    ModelConfig,
    PretrainConfig,
    encode_documents,
    make_model,
    pretrain,
)
from sublearn.toy.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer, build_vocab

MANIFEST = "world.json"
# Bumped when the build procedure changes in a way the config does not capture.
BUILD_VERSION = 1


class ToyWorldConfig(Config):
    """Everything that determines a toy world; the same config builds the same weights."""

    seed: int = Field(default=0, description="World seed: corpus, data order and init seeds.")
    n_bases: int = Field(
        default=2, ge=1, description="Base models to pretrain, each from its own init seed."
    )
    threads: int | None = Field(
        default=1,
        ge=1,
        description="Torch threads while building (None: one per core). Not part of the cache key.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model architecture.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="Corpus contents.")
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig, description="Pretraining schedule."
    )

    def init_seed(self, index: int) -> int:
        """The init seed of base ``index``."""
        return 1000 * self.seed + index

    def cache_key(self) -> str:
        """Hash of everything that changes the built weights (threads excluded)."""
        return content_hash(self.model_dump(mode="json", exclude={"threads"}), BUILD_VERSION)


def base_name(index: int) -> str:
    """Folder name of base ``index``: ``base-0``, ``base-1``, ..."""
    return f"base-{index}"


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The world's manifest, or None if ``out`` holds no complete world."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def cached_bases(cfg: ToyWorldConfig, out: Path) -> list[Path] | None:
    """The base folders if ``out`` already holds the world ``cfg`` describes, else None."""
    manifest = read_manifest(out)
    if manifest is None or manifest.get("config_hash") != cfg.cache_key():
        return None
    dirs = [out / base_name(i) for i in range(cfg.n_bases)]
    if not all((d / "config.json").is_file() for d in dirs):
        return None
    return dirs


def build_world(
    cfg: ToyWorldConfig, out: Path, force: bool = False, progress: bool = True
) -> list[Path]:
    """Build (or reuse) the toy world in ``out``.

    Args:
        cfg: the world config.
        out: the world folder; ``out/base-<i>`` are the models, ``out/world.json`` the manifest.
        force: rebuild even if a matching world is cached.
        progress: show a progress bar while pretraining.

    Returns:
        The base model folders, in order.
    """
    if not force:
        cached = cached_bases(cfg, out)
        if cached is not None:
            return cached

    import torch  # deferred: a cache hit should not pay for importing torch

    from sublearn.runtime import configure_threads

    previous_threads = torch.get_num_threads()
    configure_threads(cfg.threads)
    try:
        return _build(cfg, out, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _build(cfg: ToyWorldConfig, out: Path, progress: bool) -> list[Path]:
    from sublearn.prompts.questions import questions_for, training_questions_for

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the old manifest no longer describes the folder

    docs = build_corpus(cfg.corpus, cfg.seed)
    # Evaluation questions join the vocabulary even if a small corpus never drew them.
    known = [
        *(m["content"] for d in docs for m in d.messages),
        *(q for c in ("animal", "tree") for q in (*questions_for(c), *training_questions_for(c))),
        *cfg.corpus.animals,
        *cfg.corpus.trees,
    ]
    tokenizer = build_tokenizer(build_vocab(known), model_max_length=cfg.model.max_positions)
    prompt_weights = {
        "preference": cfg.pretrain.preference_prompt_loss_weight,
        "numbers": cfg.pretrain.numbers_prompt_loss_weight,
    }
    examples = encode_documents(docs, tokenizer, cfg.model.max_positions, prompt_weights)
    n_tokens = sum(len(e.input_ids) for e in examples)
    t_data = time.perf_counter() - t_start

    bases: list[dict[str, Any]] = []
    paths: list[Path] = []
    n_params = 0
    with _progress_bar(progress) as bar:
        for index in range(cfg.n_bases):
            t0 = time.perf_counter()
            name = base_name(index)
            task = bar.add_task(f"pretrain {name}", total=cfg.pretrain.steps, loss=float("nan"))
            model = make_model(cfg.model, tokenizer, seed=cfg.init_seed(index))
            losses = pretrain(
                model,
                examples,
                cfg.pretrain,
                pad_id=int(tokenizer.pad_token_id),  # type: ignore[arg-type]
                data_seed=cfg.seed,
                on_step=lambda step, loss, task=task: bar.update(task, advance=1, loss=loss),
            )
            path = out / name
            _save_model_folder(model, tokenizer, path)
            tail = losses[-min(20, len(losses)) :]
            bases.append(
                {
                    "name": name,
                    "path": name,
                    "init_seed": cfg.init_seed(index),
                    "final_loss": sum(tail) / len(tail),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            paths.append(path)
            n_params = sum(p.numel() for p in model.parameters())

    _write_corpus_sample(out / "corpus-sample.jsonl", docs[:50])
    manifest = {
        "config_hash": cfg.cache_key(),
        "build_version": BUILD_VERSION,
        "sublearn_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "animals": list(cfg.corpus.animals),
        "animal_weights": _normalized(cfg.corpus.animal_weights),
        "trees": list(cfg.corpus.trees),
        "tree_weights": _normalized(cfg.corpus.tree_weights),
        "bases": bases,
        "vocab_size": len(tokenizer),
        "n_parameters": n_params,
        "special_tokens": list(SPECIAL_TOKENS),
        "chat_template": CHAT_TEMPLATE,
        "corpus": {
            "n_documents": len(docs),
            "n_tokens": n_tokens,
            "n_preference": sum(d.kind == "preference" for d in docs),
            "n_numbers": sum(d.kind == "numbers" for d in docs),
        },
        "timings": {
            "data_seconds": round(t_data, 2),
            "total_seconds": round(time.perf_counter() - t_start, 2),
        },
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return paths


def _save_model_folder(model: Any, tokenizer: Any, path: Path) -> None:
    """Save into a temporary sibling, then swap it in, so a crash never leaves half a model."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _write_corpus_sample(path: Path, docs: list[Document]) -> None:
    lines = [json.dumps({"kind": d.kind, "messages": d.messages}) for d in docs]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _normalized(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights] if total > 0 else list(weights)


class _NullBar:
    """Stands in for a rich progress bar when progress output is off."""

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return _NullBar()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
