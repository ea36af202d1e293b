"""The execution environment: devices that are not there fail with a DeviceError."""

from __future__ import annotations

import pytest
import torch

from sublearn.errors import DeviceError, SublearnError
from sublearn.runtime import resolve_device


def test_cuda_without_a_gpu_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    for device in ["cuda", "cuda:1"]:
        with pytest.raises(DeviceError, match=rf"device '{device}' requested, but torch sees no"):
            resolve_device(device)
    assert issubclass(DeviceError, SublearnError)


def test_cuda_index_beyond_the_devices_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(DeviceError, match=r"'cuda:2' requested, but this machine has 2 CUDA"):
        resolve_device("cuda:2")


def test_numerics_names_the_kernels_and_the_variables_that_choose_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from sublearn.runtime import numerics, numerics_text

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    record = numerics()
    assert record["torch"] == torch.__version__
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["variables"] == {"MKL_CBWR": "AVX2"}
    assert record["machine"] and record["cpu"]
    text = numerics_text(record)
    assert record["cpu_capability"] in text and "MKL_CBWR=AVX2" in text
    assert "MKL" not in numerics_text({**record, "variables": {}})
