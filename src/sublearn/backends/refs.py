"""Model references: which provider serves a model, which weights, which adapter.

Configs name models as strings; :meth:`ModelRef.parse` turns them into a typed reference:

* ``hf:org/name``, ``vllm:org/name``, ``openai:gpt-4.1-nano``, ``mock:numbers``: a provider
  prefix, then the provider's name for the model;
* ``org/name`` or ``runs/x/model`` without a prefix: a hub id or a local folder, served by
  Hugging Face (``hf``);
* ``BASE+ADAPTER``: a LoRA adapter on a base, e.g. ``hf:Qwen/Qwen2.5-7B-Instruct+runs/x/adapter``;
* a local folder holding ``adapter_config.json``: that adapter on the base it records.

``str(ref)`` writes the reference back so that ``ModelRef.parse(str(ref)) == ref``.
:meth:`ModelRef.check` resolves a reference offline and :meth:`ModelRef.fingerprint` gives
a cheap identity of its weights for cache keys.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sublearn.errors import ConfigError, ModelError

PROVIDERS: tuple[str, ...] = ("hf", "vllm", "openai", "mock")
"""Providers a reference may name."""

# Providers whose models are weights on this machine (a folder or the hub cache).
_LOCAL_WEIGHTS = ("hf",)
_PREFIX = re.compile(r"^([A-Za-z][\w-]*):(.*)$", re.DOTALL)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODEL_FILES = ("config.json", "adapter_config.json")
POINTER_FILE = "model_ref.json"
"""A folder holding this file stands for the remote model it names (e.g. an OpenAI
fine-tune), so a task's output folder can hold a model of any provider."""


@dataclass(frozen=True)
class ModelRef:
    """A model as a provider, the provider's name for it and an optional adapter.

    Attributes:
        provider: one of :data:`PROVIDERS`.
        name: a hub id or local folder (``hf``, ``vllm``), an API model name (``openai``)
            or a mock behaviour (``mock``).
        adapter: a LoRA adapter (local folder or hub id) loaded on top of ``name``.
    """

    provider: str
    name: str
    adapter: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse a reference written in a config or on the command line.

        A string that is an existing path is a local folder even if it holds ``:`` or
        ``+``. Otherwise ``BASE+ADAPTER`` splits at the first ``+``, since hub ids cannot
        hold one.

        Raises:
            ConfigError: an unknown provider prefix or an empty model name.
            ModelError: a local adapter folder whose ``adapter_config.json`` cannot be read
                or names no base model.
        """
        text = text.strip()
        if not text:
            raise ConfigError("empty model reference: give a hub id, a folder or PROVIDER:NAME")
        pointer = Path(text).expanduser() / POINTER_FILE
        if pointer.is_file():
            return cls.parse(read_pointer(pointer))
        provider, rest = "hf", text
        match = _PREFIX.match(text)
        if match and not Path(text).expanduser().exists():
            provider, rest = match.group(1).lower(), match.group(2).strip()
            if provider not in PROVIDERS:
                raise ConfigError(_unknown_provider(match.group(1), text))
        if not rest:
            raise ConfigError(f"model reference {text!r} names no model after {provider}:")
        if provider == "mock" or Path(rest).expanduser().exists() or "+" not in rest:
            base, adapter = rest, None
        else:
            base, _, adapter = (part.strip() for part in rest.partition("+"))
            if not base or not adapter:
                raise ConfigError(
                    f"model reference {text!r}: write a base and an adapter as BASE+ADAPTER"
                )
        if adapter is None and provider in ("hf", "vllm"):
            recorded = _recorded_base(base)
            if recorded is not None:
                base, adapter = recorded, base
        return cls(provider, base, adapter)

    def __str__(self) -> str:
        suffix = f"+{self.adapter}" if self.adapter else ""
        return f"{self.provider}:{self.name}{suffix}"

    def check(self) -> None:
        """Resolve the reference offline, or fail with a message that says what to do.

        Local folders must exist and hold ``config.json`` (a model) or
        ``adapter_config.json`` (an adapter); hub ids must be in the local Hugging Face
        cache. API and vLLM references are only checked for syntax.

        Raises:
            ModelError: the model or its adapter cannot be found.
        """
        if not self.name.strip():
            raise ModelError(f"model reference {str(self)!r} names no model")
        if self.provider not in _LOCAL_WEIGHTS:
            if self.provider not in PROVIDERS:
                raise ModelError(_unknown_provider(self.provider, str(self)))
            return
        _resolve(self.name)
        if self.adapter is not None:
            _resolve(self.adapter)

    def fingerprint(self) -> str:
        """A cheap identity of the weights, for cache keys.

        A local folder is identified by its absolute path and the name, size and
        modification time of every file in it (hidden ones skipped), so a folder rebuilt
        in place gets a new fingerprint; a hub id by the id and the commit of its cached
        snapshot; an API or mock model by the reference itself.

        Raises:
            ModelError: a local-weights reference that cannot be resolved (see :meth:`check`).
        """
        if self.provider not in _LOCAL_WEIGHTS:
            return str(self)
        parts = [_fingerprint_one(self.name)]
        if self.adapter is not None:
            parts.append(_fingerprint_one(self.adapter))
        return f"{self.provider}:" + "+".join(parts)


def write_pointer(folder: Path, ref: ModelRef) -> None:
    """Make ``folder`` stand for ``ref`` (see :data:`POINTER_FILE`)."""
    from sublearn.runs import atomic_write_json

    atomic_write_json(folder / POINTER_FILE, {"ref": str(ref)})


def read_pointer(path: Path) -> str:
    """The reference a pointer file names.

    Raises:
        ModelError: the file cannot be read or names no reference.
    """
    try:
        ref = json.loads(path.read_text())["ref"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"cannot read the model pointer {path}: {err!r}") from err
    if not isinstance(ref, str) or not ref.strip() or Path(ref).expanduser() == path.parent:
        raise ModelError(f"the model pointer {path} names no other model")
    return ref


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now.

    ``huggingface_hub`` reads ``HF_HOME`` once, at import; reading it here again lets a
    process (or a test) that changes it be looked up where it points.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model, or None when it is not in the cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in _MODEL_FILES:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir())
        if isinstance(found, str):
            return Path(found).parent
    return None


def _unknown_provider(provider: str, text: str) -> str:
    close = difflib.get_close_matches(provider.lower(), PROVIDERS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"unknown model provider {provider!r} in {text!r}: {hint}"
        f"known providers: {', '.join(PROVIDERS)}"
    )


def _looks_local(name: str) -> bool:
    # A hub id is org/name; anything else, or anything that exists here, is a path.
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or not _HUB_ID.match(name)
    )


def _recorded_base(name: str) -> str | None:
    """The base model an adapter folder records, or None when ``name`` is not one."""
    config = Path(name).expanduser() / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as err:
        raise ModelError(f"cannot read {config}: {err}") from err
    if not isinstance(base, str) or not base.strip():
        raise ModelError(
            f"adapter {name} does not record its base model (no base_model_name_or_path in "
            f"{config}); name the base explicitly as BASE+{name}"
        )
    return base.strip()


def _resolve(name: str) -> Path:
    """The local folder holding ``name``'s files, or a ModelError that says what to do."""
    if not _looks_local(name):
        snapshot = cached_snapshot(name)
        if snapshot is None:
            raise ModelError(
                f"model {name!r} is not in the local cache ({hub_cache_dir()}); download it "
                f"first (huggingface-cli download {name}) or give a local folder"
            )
        return snapshot
    path = Path(name).expanduser()
    if not path.exists():
        hint = "" if _HUB_ID.match(name) else ", and it is not a hub id (org/name)"
        raise ModelError(
            f"model {name!r} not found: no such folder{hint}. For the embedded toy models, "
            "run `sublearn toy build` first."
        )
    if not any((path / f).is_file() for f in _MODEL_FILES):
        raise ModelError(
            f"{path} exists but is not a model folder (no config.json or adapter_config.json)"
        )
    return path


def _fingerprint_one(name: str) -> str:
    folder = _resolve(name)
    if not _looks_local(name):
        # The snapshot folder is named by the commit it holds.
        return f"{name}@{folder.name}"
    return "dir-" + folder_fingerprint(folder)


def folder_fingerprint(folder: Path, length: int = 16) -> str:
    """Hash of a folder's absolute path and its files' names, sizes and mtimes.

    Hidden files and folders (a leading dot) are skipped: they hold caches and temporary
    files, not weights. Reading metadata only keeps this cheap for multi-GB checkpoints.
    """
    root = folder.resolve()
    digest = hashlib.sha256(str(root).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(dirpath) / filename
            try:
                stat = path.stat()
            except FileNotFoundError:  # a dangling link, or a file removed meanwhile
                continue
            rel = path.relative_to(root).as_posix()
            digest.update(f"\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:length]
