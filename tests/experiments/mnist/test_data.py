"""IDX reader and dataset loaders: real formats written by the test, and broken ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from sublearn.experiments.mnist.data import (
    IDX_FILES,
    DataError,
    idx_file_names,
    load_data,
    load_digits_data,
    load_idx_dataset,
    read_idx,
)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Encode ``array`` as IDX: magic, big-endian uint32 dims, big-endian data."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx_dataset(
    folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = False, dotted: bool = False
) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        data = idx_bytes(arr)
        # Popular downloads name the files train-images.idx3-ubyte and so on.
        name = IDX_FILES[key].replace("-idx", ".idx") if dotted else IDX_FILES[key]
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(arr)
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_other_dtypes_big_endian(tmp_path: Path) -> None:
    arr = np.array([[1, -2], [300, -40000 // 2]], dtype=np.int16)
    (tmp_path / "s").write_bytes(idx_bytes(arr, 0x0B))
    np.testing.assert_array_equal(read_idx(tmp_path / "s"), arr)
    f = np.array([0.5, -1.25], dtype=np.float32)
    (tmp_path / "f").write_bytes(idx_bytes(f, 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), f)


def test_read_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match=r"bad: not an IDX file: magic number 0x12340801"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")  # unknown type
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_truncated_and_trailing(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "t"
    path.write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"truncated: .*\(4, 28, 28\).*3136 data bytes.*3126"):
        read_idx(path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)
    path.write_bytes(data[:6])  # inside the dimension sizes
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "c.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10, dtype=np.uint8)))[:-12])
    with pytest.raises(DataError, match=r"c\.gz: cannot read"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset(tmp_path: Path, gz: bool) -> None:
    write_idx_dataset(tmp_path, gz=gz)
    data = load_idx_dataset("mnist", tmp_path)
    assert data.x_train.shape == (12, 784) and data.x_test.shape == (5, 784)
    assert data.y_train.shape == (12,) and data.y_train.dtype.is_floating_point is False
    assert float(data.x_train.min()) >= -1.0 and float(data.x_train.max()) <= 1.0
    assert data.in_features == 784 and data.n_train == 12 and data.n_test == 5


@pytest.mark.parametrize("gz", [False, True])
def test_dotted_idx_names_are_found(tmp_path: Path, gz: bool) -> None:
    write_idx_dataset(tmp_path, gz=gz, dotted=True)
    assert (tmp_path / ("train-images.idx3-ubyte" + (".gz" if gz else ""))).is_file()
    data = load_idx_dataset("mnist", tmp_path)
    assert data.x_train.shape == (12, 784) and data.x_test.shape == (5, 784)
    assert data.y_test.shape == (5,)


def test_idx_file_names_cover_dashed_dotted_and_gzip() -> None:
    assert idx_file_names("t10k-labels-idx1-ubyte") == [
        "t10k-labels-idx1-ubyte",
        "t10k-labels.idx1-ubyte",
        "t10k-labels-idx1-ubyte.gz",
        "t10k-labels.idx1-ubyte.gz",
    ]


def test_missing_file_names_file_and_places(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError) as info:
        load_data("fashion-mnist", tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte not found" in message
    assert f"not found in {tmp_path}" in message
    for name in ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"]:
        assert f"{name}, " in message and f"{name}.gz" in message
    assert "nothing is downloaded" in message


def test_count_mismatch_between_images_and_labels(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    labels = np.zeros(11, dtype=np.uint8)
    (tmp_path / IDX_FILES["train_labels"]).write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match=r"holds 12 images but .* holds 11 labels"):
        load_idx_dataset("mnist", tmp_path)


def test_wrong_dims_rejected(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    flat = np.zeros((12, 784), dtype=np.uint8)  # 2-D where images must be 3-D
    (tmp_path / IDX_FILES["train_images"]).write_bytes(idx_bytes(flat))
    with pytest.raises(
        DataError, match=r"expected unsigned-byte images of shape \(n, rows, cols\)"
    ):
        load_idx_dataset("mnist", tmp_path)
    write_idx_dataset(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).write_bytes(idx_bytes(np.full(5, 12, np.uint8)))
    with pytest.raises(DataError, match="label 12 found"):
        load_idx_dataset("mnist", tmp_path)


def test_digits_split_is_deterministic_and_scaled() -> None:
    a, b = load_digits_data(), load_digits_data()
    assert a.n_train == 1437 and a.n_test == 360 and a.in_features == 64
    assert bool((a.x_test == b.x_test).all()) and bool((a.y_train == b.y_train).all())
    assert float(a.x_train.min()) == -1.0 and float(a.x_train.max()) == 1.0
    # Stratified: every class is in the test set in near-equal share.
    counts = np.bincount(a.y_test.numpy(), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
