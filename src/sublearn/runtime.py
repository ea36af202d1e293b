"""The execution environment of a command: threads, seeds and the torch device."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import sys
from typing import Any

from sublearn.errors import DeviceError


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count; ``None`` picks the number of cores.

    Inter-op parallelism is pinned to one thread: on small CPUs the two pools compete
    for the same cores and slow each other down.

    Returns:
        The thread count in effect.
    """
    import torch

    n = threads if threads and threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    # Only settable before the first parallel op; later calls keep what is there.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return n


# Environment variables that change which CPU kernels torch and MKL pick, and so the
# rounding of every matrix product (see numerics()).
KERNEL_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
)


def numerics() -> dict[str, Any]:
    """What decides the floating-point rounding of this process's CPU arithmetic.

    torch and MKL choose their kernels by the processor's instruction set (AVX-512, AVX2,
    ...), and kernels round differently in the last bits. A long training run amplifies
    that: the same code and config give other weights on another kind of CPU. Runs record
    this so that two results can be told apart by where they were computed.

    Returns:
        ``torch`` (version), ``cpu_capability`` (the kernel set torch dispatches to),
        ``machine``, ``cpu`` (the processor's model name, where the system says it) and
        ``variables`` (the kernel-choosing environment variables that are set).
    """
    import platform

    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        names = (line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        cpu = next(names, cpu)
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpu": cpu,
        "variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
    }


def numerics_text(record: dict[str, Any]) -> str:
    """One line of a :func:`numerics` record, e.g. ``Intel Xeon (x86_64), torch 2.13.0
    kernels AVX512``."""
    variables = ", ".join(f"{k}={v}" for k, v in record.get("variables", {}).items())
    return (
        f"{record.get('cpu') or 'unknown CPU'} ({record.get('machine')}), torch "
        f"{record.get('torch')} kernels {record.get('cpu_capability')}"
        + (f", {variables}" if variables else "")
    )


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when available, and fail clearly on an unavailable device.

    Raises:
        DeviceError: for ``cuda`` (or ``cuda:N``, ``mps``) on a machine that lacks it.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise DeviceError(
            f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps "
            f"(torch {torch.__version__} on this machine: {_available(torch)})"
        )
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} requested, but torch sees no CUDA device here "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use device=cpu or device=auto"
            )
        _, _, index = device.partition(":")
        count = torch.cuda.device_count()
        if index.isdigit() and int(index) >= count:
            raise DeviceError(
                f"device {device!r} requested, but this machine has {count} CUDA "
                f"device(s): cuda:0 to cuda:{count - 1}"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' requested, but torch sees no Apple GPU here")
    return device


def _available(torch: Any) -> str:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join(found)


def quiet_libraries() -> None:
    """Silence the Hugging Face libraries' own progress bars and info logs.

    sublearn draws one progress bar per stage; nested per-file bars from
    ``transformers`` and ``datasets`` would bury it.
    """
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated.*")
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (no orphaned workers).

    Used as the initializer of every worker pool (engine executors, toy-world
    pretraining), so a parent killed by SIGKILL leaves no worker behind.

    Args:
        parent: PID of the process that started this worker.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        return
    # A parent that died while this worker was starting sends no signal: leave now.
    if os.getppid() != parent:
        os._exit(1)
