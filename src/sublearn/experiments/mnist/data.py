"""Datasets for the MLP experiment: scikit-learn digits and IDX-format MNIST.

Images are flattened and scaled to [-1, 1], the range of the uniform distillation
noise, so that noise and real images live on the same scale. Nothing is downloaded:
MNIST and Fashion-MNIST are read from the standard IDX files in a local folder.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sublearn.errors import DataError
from sublearn.experiments.mnist.config import N_CLASSES

# IDX type codes (third byte of the magic number) and their big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, so every run seed is scored on the same test images


@dataclass(frozen=True)
class ImageData:
    """A train/test split of flattened images in [-1, 1] with integer labels."""

    name: str
    x_train: torch.Tensor  # (n_train, in) float32
    y_train: torch.Tensor  # (n_train,) int64
    x_test: torch.Tensor  # (n_test, in) float32
    y_test: torch.Tensor  # (n_test,) int64

    @property
    def in_features(self) -> int:
        """Pixels per image."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        """Training images."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Test images."""
        return int(self.x_test.shape[0])

    def to(self, device: str | torch.device) -> ImageData:
        """The same data on ``device``."""
        return ImageData(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
        )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array.

    Format: two zero bytes, a type code (0x08 = unsigned byte), the number of
    dimensions, one big-endian uint32 size per dimension, then the data.

    Args:
        path: the file; gzip is recognized by its content, not its name.

    Returns:
        The array, shaped as the header says.

    Raises:
        DataError: if the file cannot be read, is not IDX, or its size does not match
            its header.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for the 4-byte IDX magic number")
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file: magic number 0x{raw[:4].hex()} (expected 0x0000, a type "
            "code such as 08 for unsigned bytes, and the number of dimensions, e.g. "
            "0x00000803 for images or 0x00000801 for labels)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
            f"file has {len(raw)}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    count = math.prod(dims)
    expected, found = count * dtype.itemsize, len(raw) - header
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: the header's shape {tuple(dims)} of {dtype.name} needs "
            f"{expected} data bytes, the file has {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def idx_file_names(stem: str) -> list[str]:
    """Names an IDX file goes by: ``train-images-idx3-ubyte`` and the dotted
    ``train-images.idx3-ubyte`` that popular downloads use, each optionally ``.gz``."""
    dotted = re.sub(r"-(idx\d-ubyte)$", r".\1", stem)
    names = list(dict.fromkeys([stem, dotted]))
    return [*names, *(f"{name}.gz" for name in names)]


def find_idx_file(data_dir: Path, stem: str, dataset: str) -> Path:
    """The IDX file ``stem`` in ``data_dir`` under any of its names, or a clear error."""
    candidates = [data_dir / name for name in idx_file_names(stem)]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"{dataset}: file {stem} not found in {data_dir}; looked for "
        f"{', '.join(p.name for p in candidates)}. Expected the four standard IDX files "
        f"({', '.join(IDX_FILES.values())}, each optionally dotted as in "
        "train-images.idx3-ubyte and optionally .gz) in that folder; nothing is "
        "downloaded. Set the folder with --data-dir (or data_dir=...)."
    )


def _load_idx_split(data_dir: Path, dataset: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) uint8 and labels (n,) uint8 of the train or test split."""
    images_path = find_idx_file(data_dir, IDX_FILES[f"{which}_images"], dataset)
    labels_path = find_idx_file(data_dir, IDX_FILES[f"{which}_labels"], dataset)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path}: expected unsigned-byte images of shape (n, rows, cols), got "
            f"{images.dtype.name} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected unsigned-byte labels of shape (n,), got "
            f"{labels.dtype.name} of shape {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; expected the same count"
        )
    if labels.size and int(labels.max()) >= N_CLASSES:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} found; expected class labels 0-9"
        )
    return images, labels


def load_idx_dataset(name: str, data_dir: Path) -> ImageData:
    """MNIST or Fashion-MNIST from the four IDX files in ``data_dir``.

    Args:
        name: dataset name, used in messages.
        data_dir: folder with the IDX files.

    Raises:
        DataError: naming the file, where it was looked for and what was expected.
    """
    x_train, y_train = _load_idx_split(data_dir, name, "train")
    x_test, y_test = _load_idx_split(data_dir, name, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{data_dir}: training images are {x_train.shape[1:]} but test images are "
            f"{x_test.shape[1:]}; expected the same image size"
        )
    return ImageData(
        name,
        _scale(x_train.reshape(len(x_train), -1), 255.0),
        torch.from_numpy(y_train.astype(np.int64)),
        _scale(x_test.reshape(len(x_test), -1), 255.0),
        torch.from_numpy(y_test.astype(np.int64)),
    )


def load_digits_data() -> ImageData:
    """scikit-learn's bundled 8x8 digits, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)  # (1797, 64) pixel values 0..16, (1797,)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return ImageData(
        "digits",
        _scale(np.asarray(x_tr), 16.0),
        torch.from_numpy(np.asarray(y_tr, dtype=np.int64)),
        _scale(np.asarray(x_te), 16.0),
        torch.from_numpy(np.asarray(y_te, dtype=np.int64)),
    )


def load_data(name: str, data_dir: Path) -> ImageData:
    """The dataset called ``name``; ``data_dir`` is only read for IDX datasets."""
    if name == "digits":
        return load_digits_data()
    if name in ("mnist", "fashion-mnist"):
        return load_idx_dataset(name, data_dir)
    raise DataError(f"unknown dataset {name!r} (choices: digits, mnist, fashion-mnist)")


def _scale(pixels: np.ndarray, top: float) -> torch.Tensor:
    """Map pixel values in [0, top] to float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    return x.mul_(2.0 / top).sub_(1.0)
