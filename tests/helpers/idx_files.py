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
