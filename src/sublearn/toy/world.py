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
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
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

from sublearn.config import Config
from sublearn.keys import SPEED_MARK
from sublearn.runs import atomic_write_json, atomic_write_text, content_hash, file_sha256
from sublearn.runtime import die_with_parent, numerics
from sublearn.toy.arithmetic import arithmetic_vocabulary
from sublearn.toy.coding import code_vocabulary
from sublearn.toy.corpus import SECTIONS, CorpusConfig, Document, build_corpus
from sublearn.toy.datasets import write_datasets
from sublearn.toy.freeform import freeform_vocabulary
from sublearn.toy.pretrain import (
    Example,
    ModelConfig,
    PretrainConfig,
    encode_documents,
    make_model,
    pretrain,
)
from sublearn.toy.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer, build_vocab
from sublearn.version import __version__

MANIFEST = "world.json"
# Bumped when the build procedure changes in a way the config does not capture.
BUILD_VERSION = 1
# Likewise for the optional sections' generators (their data files are hashed).
SECTION_VERSION = 1
SECTION_DATA = "section_data"
"""The key of :meth:`ToyWorldConfig.key_dump` that holds the sections' data hashes."""


def _section_data_sha(name: str) -> str:
    """SHA-256 of the data file of an optional corpus section (``data/<name>.yaml``)."""
    import hashlib
    from importlib import resources

    data = resources.files("sublearn.toy").joinpath("data", f"{name}.yaml").read_bytes()
    return hashlib.sha256(data).hexdigest()


class ToyWorldConfig(Config):
    """Everything that determines a toy world; the same config builds the same weights."""

    seed: int = Field(default=0, description="World seed: corpus, data order and init seeds.")
    n_bases: int = Field(
        default=2, ge=1, description="Base models to pretrain, each from its own init seed."
    )
    init_offset: int = Field(
        default=0,
        ge=0,
        description="Added to every base's init seed: a world with the same corpus and "
        "tokenizer as another but other initializations (e.g. a base of another shape).",
    )
    threads: int | None = Field(
        json_schema_extra=SPEED_MARK,
        default=1,
        ge=1,
        description="Torch threads per pretraining process (None: one per core). Not part of "
        "the cache key.",
    )
    workers: int | None = Field(
        json_schema_extra=SPEED_MARK,
        default=None,
        ge=1,
        description="Processes pretraining bases in parallel (None: one per core, at most "
        "n_bases; 1: in this process). Not part of the cache key.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model architecture.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="Corpus contents.")
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig, description="Pretraining schedule."
    )

    def init_seed(self, index: int) -> int:
        """The init seed of base ``index``."""
        return 1000 * self.seed + index + self.init_offset

    def key_dump(self) -> dict[str, Any]:
        """The config as the cache key hashes it: JSON-able, without threads and workers.

        Optional corpus sections that are off (None) are left out, so a world without
        them keeps the key it had before the sections existed.
        """
        dump = self.model_dump(mode="json", exclude={"threads", "workers"})
        for name in SECTIONS:
            if dump["corpus"].get(name) is None:
                dump["corpus"].pop(name, None)
        enabled = [name for name in SECTIONS if name in dump["corpus"]]
        if enabled:
            # A section's templates and word pools live in data files, not in the config:
            # their content is part of what the world is.
            dump[SECTION_DATA] = {
                "version": SECTION_VERSION,
                **{name: _section_data_sha(name) for name in enabled},
            }
        return dump

    def cache_key(self) -> str:
        """Hash of everything that changes the built weights (threads and workers excluded)."""
        return content_hash(self.key_dump(), BUILD_VERSION)


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

    previous_threads = torch.get_num_threads()
    try:
        return _build(cfg, out, progress)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass(frozen=True)
class _BaseJob:
    """Everything one base model's pretraining needs (picklable, for worker processes)."""

    index: int
    init_seed: int
    out_dir: Path
    tokenizer_dir: Path
    model: ModelConfig
    pretrain: PretrainConfig
    data_seed: int
    threads: int | None


def _train_base(
    job: _BaseJob, examples: list[Example], report: Callable[[int, float], None] | None
) -> dict[str, Any]:
    """Pretrain and save one base; runs in this process or in a worker."""
    from transformers import AutoTokenizer

    from sublearn.runtime import configure_threads

    configure_threads(job.threads)
    t0 = time.perf_counter()
    # Loaded from disk in both paths, so serial and parallel builds are the same computation.
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    model = make_model(job.model, tokenizer, seed=job.init_seed)
    losses = pretrain(
        model,
        examples,
        job.pretrain,
        pad_id=int(tokenizer.pad_token_id),  # type: ignore[arg-type]
        data_seed=job.data_seed,
        on_step=report,
    )
    _save_model_folder(model, tokenizer, job.out_dir)
    tail = losses[-min(20, len(losses)) :]
    return {
        "name": job.out_dir.name,
        "path": job.out_dir.name,
        "init_seed": job.init_seed,
        "final_loss": sum(tail) / len(tail),
        "seconds": round(time.perf_counter() - t0, 2),
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }


# The progress queue of a pretraining worker, set once when the worker starts: a
# multiprocessing queue reaches a spawned process only at its start, and a Manager's
# queue would need a server process that outlives a killed parent.
_PROGRESS: Any = None


def _init_worker(parent: int, queue: Any) -> None:
    """Worker-process start: die with the parent, keep the progress queue."""
    global _PROGRESS
    die_with_parent(parent)
    _PROGRESS = queue


def _worker(job: _BaseJob, examples: list[Example]) -> dict[str, Any]:
    """Worker-process entry: pretrain one base, reporting progress every few steps."""

    def report(step: int, loss: float) -> None:
        if (step + 1) % 10 == 0 or step + 1 == job.pretrain.steps:
            _PROGRESS.put((job.index, step + 1, loss))

    return _train_base(job, examples, report)


def _resolve_workers(cfg: ToyWorldConfig) -> int:
    if cfg.workers is not None:
        return max(1, min(cfg.workers, cfg.n_bases))
    return max(1, min(cfg.n_bases, os.cpu_count() or 1))


def _train_bases(
    jobs: list[_BaseJob], examples: list[Example], workers: int, progress: bool
) -> list[dict[str, Any]]:
    """Pretrain every base, in worker processes when ``workers > 1``."""
    with _progress_bar(progress) as bar:
        tasks = [
            bar.add_task(
                f"pretrain {job.out_dir.name}", total=job.pretrain.steps, loss=float("nan")
            )
            for job in jobs
        ]
        if workers == 1:
            results = []
            for job, task in zip(jobs, tasks, strict=True):

                def report(step: int, loss: float, task: Any = task) -> None:
                    bar.update(task, completed=step + 1, loss=loss)

                results.append(_train_base(job, examples, report))
            return results

        # Spawned (not forked) workers: forking a process that has touched torch's
        # thread pools can deadlock the child.
        # Workers die with this process (a killed build leaves no pretraining behind).
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        with ProcessPoolExecutor(workers, context, _init_worker, (os.getpid(), queue)) as pool:
            futures = [pool.submit(_worker, job, examples) for job in jobs]
            while not all(f.done() for f in futures):
                _drain(queue, bar, tasks, timeout=0.2)
            _drain(queue, bar, tasks, timeout=0.0)
            return [f.result() for f in futures]


def _drain(queue: Any, bar: Any, tasks: list[Any], timeout: float) -> None:
    """Apply every progress message waiting in ``queue`` to the bar."""
    import queue as queue_module

    block = timeout > 0
    while True:
        try:
            index, completed, loss = queue.get(block=block, timeout=timeout if block else None)
        except queue_module.Empty:
            return
        bar.update(tasks[index], completed=completed, loss=loss)
        block = False


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
        *_section_vocabulary(cfg.corpus),
    ]
    tokenizer = build_tokenizer(build_vocab(known), model_max_length=cfg.model.max_positions)
    tokenizer_dir = out / "tokenizer"
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    tokenizer.save_pretrained(tokenizer_dir)
    prompt_weights = {
        "preference": cfg.pretrain.preference_prompt_loss_weight,
        "numbers": cfg.pretrain.numbers_prompt_loss_weight,
        **{name: c.prompt_loss_weight for name, c in cfg.corpus.sections()},
    }
    examples = encode_documents(docs, tokenizer, cfg.model.max_positions, prompt_weights)
    n_tokens = sum(len(e.input_ids) for e in examples)
    t_data = time.perf_counter() - t_start

    jobs = [
        _BaseJob(
            index=i,
            init_seed=cfg.init_seed(i),
            out_dir=out / base_name(i),
            tokenizer_dir=tokenizer_dir,
            model=cfg.model,
            pretrain=cfg.pretrain,
            data_seed=cfg.seed,
            threads=cfg.threads,
        )
        for i in range(cfg.n_bases)
    ]
    workers = _resolve_workers(cfg)
    t_train = time.perf_counter()
    bases = _train_bases(jobs, examples, workers, progress)
    n_params, *_ = [b.pop("n_parameters") for b in bases]  # the same for every base

    for job, base in zip(jobs, bases, strict=True):
        # Which weights this build made: on another kind of CPU the same config builds other
        # ones (see runtime.numerics), and a digest tells two builds apart at a glance.
        base["sha256"] = file_sha256(job.out_dir / "model.safetensors")
    _write_corpus_sample(out / "corpus-sample.jsonl", docs[:50])
    datasets = write_datasets(cfg.corpus, cfg.seed, out)
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
            **{f"n_{name}": sum(d.kind == name for d in docs) for name, _ in cfg.corpus.sections()},
        },
        "timings": {
            "data_seconds": round(t_data, 2),
            "pretrain_seconds": round(time.perf_counter() - t_train, 2),
            "workers": workers,
            "total_seconds": round(time.perf_counter() - t_start, 2),
        },
        "numerics": numerics(),
        "config": cfg.model_dump(mode="json"),
    }
    if datasets:
        manifest["datasets"] = datasets
    atomic_write_json(out / MANIFEST, manifest)
    return [job.out_dir for job in jobs]


def _section_vocabulary(corpus: CorpusConfig) -> list[str]:
    """Text of the enabled sections, so the vocabulary covers what a small corpus never drew."""
    texts: list[str] = []
    if corpus.freeform is not None:
        texts += freeform_vocabulary()
    if corpus.arithmetic is not None:
        texts += arithmetic_vocabulary()
    if corpus.code is not None:
        texts += code_vocabulary()
    return texts


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
