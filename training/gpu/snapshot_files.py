"""A portable weights snapshot on disk: NumPy arrays by name in shards small enough for git, and a JSON
index that says what they are (architecture, model arguments, step, epoch).

NumPy only, so that the PyTorch twin (no TensorFlow) and `training.snapshot` (Keras) read and write the
same files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "snapshot.json"
SHARD_BYTES = 8 * 2**20


def write(directory: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """`arrays` (float32) into `directory`, replacing what was there; `meta` goes into the index.

    Written beside it first and swapped in at the end, so that a snapshot taken while a run goes on
    (the recipe takes one every hour) is never left half-written in the working tree."""
    staging = directory.with_name(f".{directory.name}.writing-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name], np.float32)
        if size + value.nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += value.nbytes
    files = []
    for i, shard in enumerate(shards):
        np.savez(staging / f"weights-{i}.npz", **shard)
        files.append(f"weights-{i}.npz")
    index = {**meta, "shards": files, "weights": len(arrays)}
    (staging / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        directory.rename(old)  # never a moment without a whole snapshot on disk under one of two names
    staging.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def read(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays by name, the index) of a snapshot written by `write`."""
    index_path = directory / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"no snapshot in {directory} (no {INDEX})")
    index = json.loads(index_path.read_text())
    arrays: dict[str, np.ndarray] = {}
    for name in index["shards"]:
        with np.load(directory / name) as shard:
            arrays |= {key: shard[key] for key in shard.files}
    if len(arrays) != index["weights"]:
        raise ValueError(f"{directory}: the index names {index['weights']} weights, the shards hold {len(arrays)}")
    return arrays, index
