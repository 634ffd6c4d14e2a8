"""MNIST's distribution format (IDX, gzipped), for tests that give the training CLI a dataset folder."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """Magic (0, 0, dtype=0x08, ndim), big-endian dims, raw uint8 bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_shapes_idx(folder: Path, n: int = 240) -> Path:
    """A tiny t10k-style IDX pair in `folder`: bright squares (label 0) and bright bars (label 1) at
    random places, so a few epochs learn codes that separate the two."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), np.uint8)
    labels = rng.integers(0, 2, n).astype(np.uint8)
    for img, label in zip(images, labels):
        y, x = rng.integers(2, 14, 2)
        if label == 0:
            img[y : y + 10, x : x + 10] = 255
        else:
            img[y : y + 12, x + 4 : x + 7] = 255
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    return folder
