"""MNIST data for the objective: an IDX reader, the directory lookup and the fixed train/val split.

Nothing here downloads anything. With no MNIST directory the data falls back to scikit-learn's
bundled 8x8 digits, which ship inside the scikit-learn wheel.

This module imports numpy only (no torch), so the data can be inspected without a model.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..._imports import require

logger = logging.getLogger("hposdk.objectives.mnist")

#: The environment variable read when ``data_dir`` is not given.
ENV_VAR = "HPOSDK_MNIST_DIR"

DataName = Literal["mnist-idx", "sklearn-digits"]

#: IDX type codes (third byte of the magic number) and their big-endian numpy types.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

#: The standard MNIST file names, per split (each may also be gzipped, ``<name>.gz``).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# The validation set is carved out of the training files, never out of t10k: the test set stays
# untouched by model selection. The split seed is a constant, not ``params.seed``, so that every
# trial of a study (whatever its seed) is scored on the very same validation images.
_VAL_FRACTION = 1 / 6  # 10,000 of MNIST's 60,000 training images; 300 of the 1,797 digits
_SPLIT_SEED = 20240527


class IdxFormatError(ValueError):
    """An IDX file is malformed (bad magic number, shape or length); the message names the file."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its native type.

    The IDX format (used by MNIST) is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, ``ndim``
    big-endian uint32 dimension sizes, then the values in big-endian C order.

    Args:
        path: the file; a name ending in ``.gz`` is decompressed.

    Returns:
        A read-only array with the file's shape and type (native byte order).

    Raises:
        IdxFormatError: the magic number is wrong or the data length does not match the header.
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(p).tolist()
        [7, 2, 1]
    """
    path = Path(path)
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw: bytes = fh.read()
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # gzip raises BadGzipFile (an OSError) or EOFError for a corrupt or truncated archive.
        raise IdxFormatError(
            f"{path}: cannot read the file as {'gzip' if opener is not open else 'IDX'}: {exc}"
        ) from exc
    if len(raw) < 4:
        raise IdxFormatError(
            f"{path}: not an IDX file: it has {len(raw)} bytes, fewer than the 4-byte magic number"
        )
    zero, type_code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        magic = int.from_bytes(raw[0:4], "big")
        raise IdxFormatError(
            f"{path}: not an IDX file: the magic number must be 0x0000TTNN (TT a type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)}, NN >= 1 dimensions), but got 0x{magic:08X}"
            + (" (is it still gzip-compressed without a .gz name?)" if raw[:2] == b"\x1f\x8b" else "")
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(raw)}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing data"
        raise IdxFormatError(
            f"{path}: the header declares shape {shape} of {dtype.newbyteorder('=').name}, i.e. "
            f"{expected} bytes in all, but the file has {len(raw)} bytes ({what})"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    arr.flags.writeable = False
    return arr


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _mnist_dir(directory: Path) -> Path:
    """The folder holding the IDX files: ``directory`` itself or torchvision's ``MNIST/raw`` in it."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"MNIST data directory {str(directory)!r} does not exist (or is not a directory); "
            f"set data_dir (or ${ENV_VAR}) to the folder holding {MNIST_FILES['train'][0]}[.gz] and the "
            "other IDX files, or leave both unset to use scikit-learn's bundled 8x8 digits"
        )
    for folder in (directory, directory / "MNIST" / "raw"):
        if all(_find(folder, n) is not None for n in MNIST_FILES["train"]):
            return folder
    missing = [n for n in MNIST_FILES["train"] if _find(directory, n) is None]
    raise FileNotFoundError(
        f"MNIST data directory {str(directory)!r} lacks {', '.join(f'{m}[.gz]' for m in missing)} "
        "(also looked in its MNIST/raw/ subfolder, torchvision's layout); nothing is downloaded: "
        "copy the standard MNIST IDX files there, or leave data_dir and "
        f"${ENV_VAR} unset to use scikit-learn's bundled 8x8 digits"
    )


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """The MNIST folder to read: ``data_dir``, else ``$HPOSDK_MNIST_DIR``, else None (sklearn digits).

    Raises:
        FileNotFoundError: a directory was given but it lacks the training IDX files.
    """
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    if chosen is None:
        return None
    return _mnist_dir(Path(chosen).expanduser().resolve())


def load_mnist_split(
    directory: str | os.PathLike[str], split: Literal["train", "test"] = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST split from IDX files and check that images and labels belong together.

    Args:
        directory: the folder holding the standard file names (each optionally ``.gz``).
        split: ``"train"`` (``train-*``) or ``"test"`` (``t10k-*``).

    Returns:
        ``(images, labels)``: uint8 arrays of shape ``(n, rows, cols)`` and ``(n,)``.

    Raises:
        FileNotFoundError: a file is missing.
        IdxFormatError: a file is malformed, or the two files do not match.
    """
    folder = Path(directory)
    paths = []
    for name in MNIST_FILES[split]:
        found = _find(folder, name)
        if found is None:
            raise FileNotFoundError(
                f"{folder / name}[.gz]: MNIST {split} file not found (nothing is downloaded)"
            )
        paths.append(found)
    img_path, lbl_path = paths
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{img_path}: MNIST images must be a 3-d uint8 IDX array (magic 0x00000803), "
            f"but got {images.ndim}-d {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxFormatError(
            f"{lbl_path}: MNIST labels must be a 1-d uint8 IDX array (magic 0x00000801), "
            f"but got {labels.ndim}-d {labels.dtype}"
        )
    if len(images) != len(labels):
        raise IdxFormatError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise IdxFormatError(f"{lbl_path}: MNIST labels must be digits 0..9, but found {int(labels.max())}")
    return images, labels


@dataclass(frozen=True)
class Splits:
    """The arrays a trial trains and validates on (images as float32 ``(n, 1, h, w)``, standardised)."""

    name: DataName
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def _raw(directory: Path | None) -> tuple[DataName, str, np.ndarray, np.ndarray]:
    """The whole labelled pool of the chosen source (images on a 0..255 scale, labels int64)."""
    if directory is None:
        return _raw_cached(None, ())
    # The files' sizes and mtimes are part of the cache key, so replaced files are read afresh.
    stamp = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()
    )
    return _raw_cached(directory, stamp)


@functools.lru_cache(maxsize=2)
def _raw_cached(
    directory: Path | None, stamp: tuple[Any, ...]
) -> tuple[DataName, str, np.ndarray, np.ndarray]:
    # Cached: trials that run in one process (threads, or one after another) read the files once.
    del stamp  # only part of the cache key
    if directory is None:
        datasets = require("sklearn.datasets", "mnist", "the MNIST objective without an MNIST directory")
        digits = datasets.load_digits()
        # The digits are 0..16 intensities; rescale to 0..255 so both sources share one scale.
        images = np.asarray(digits.images * (255.0 / 16.0), dtype=np.float32)
        labels = np.asarray(digits.target, dtype=np.int64)
        images.flags.writeable = labels.flags.writeable = False
        return "sklearn-digits", "sklearn.datasets.load_digits (8x8)", images, labels
    images, labels = load_mnist_split(directory, "train")
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return "mnist-idx", str(directory), images, labels  # images stay uint8: 4x less memory cached


def load_splits(
    data_dir: str | None, max_train_samples: int | None = None, max_val_samples: int | None = None
) -> Splits:
    """The fixed train/validation split of MNIST (or of the sklearn digits), optionally subsampled.

    The split is seeded by a constant, so every trial is scored on the same validation images;
    ``max_*_samples`` take the first images of each (already shuffled) part.
    """
    name, source, images, labels = _raw(resolve_data_dir(data_dir))
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    n_val = max(1, round(len(labels) * _VAL_FRACTION))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if max_train_samples is not None:
        train_idx = train_idx[:max_train_samples]
    if max_val_samples is not None:
        val_idx = val_idx[:max_val_samples]
    x_train = images[train_idx].astype(np.float32) / np.float32(255.0)
    x_val = images[val_idx].astype(np.float32) / np.float32(255.0)
    # Standardise with the training part's statistics (never the validation part's).
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0
    splits = Splits(
        name=name,
        source=source,
        x_train=((x_train - mean) / std).astype(np.float32)[:, None],
        y_train=labels[train_idx],
        x_val=((x_val - mean) / std).astype(np.float32)[:, None],
        y_val=labels[val_idx],
    )
    logger.info(
        "MNIST objective: data %s from %s: %d train / %d val images of %dx%d",
        name,
        source,
        len(splits.y_train),
        len(splits.y_val),
        splits.image_size,
        splits.image_size,
    )
    return splits


def describe_data(params: Mapping[str, Any] | Any) -> DataName:
    """Which data the objective will use for these params: ``"mnist-idx"`` or ``"sklearn-digits"``.

    Args:
        params: a ``MnistParams`` or a mapping with an optional ``data_dir`` key.

    Raises:
        FileNotFoundError: a directory is set (``data_dir`` or ``$HPOSDK_MNIST_DIR``) but it lacks
            the MNIST training files.
    """
    data_dir = params.get("data_dir") if isinstance(params, Mapping) else getattr(params, "data_dir", None)
    return "sklearn-digits" if resolve_data_dir(data_dir) is None else "mnist-idx"
