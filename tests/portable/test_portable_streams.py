"""Streams decode on any machine: encode under one TensorFlow configuration, decode under others.

Each side runs in its own process (`tests/portable/worker.py`), through the service's code path, with
oneDNN on and off and one or all intra-op threads (and on the GPU as well when the machine has one).
Every stream must decode, to exactly the symbols the encoder coded, and to pixels within one level of
what the encoder's own configuration decodes. Float entropy parameters fail this (natural version 8:
streams lost at a scale-table boundary); integer ones must not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENCODER = {"TF_ENABLE_ONEDNN_OPTS": "1", "threads": "0"}
DECODERS = [
    {"TF_ENABLE_ONEDNN_OPTS": "1", "threads": "0"},
    {"TF_ENABLE_ONEDNN_OPTS": "0", "threads": "0"},
    {"TF_ENABLE_ONEDNN_OPTS": "1", "threads": "1"},
    {"TF_ENABLE_ONEDNN_OPTS": "0", "threads": "1"},
]
if shutil.which("nvidia-smi"):  # the GPU path too, where there is one (the others then run on the CPU)
    DECODERS.append({"TF_ENABLE_ONEDNN_OPTS": "1", "threads": "0", "gpu": "1"})


def _newest_natural() -> Path | None:
    folder = ROOT / "models_store" / "natural"
    versions = [p for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _run(config: dict[str, str], *args: str) -> None:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": config["TF_ENABLE_ONEDNN_OPTS"], "TF_CPP_MIN_LOG_LEVEL": "2"}
    if not config.get("gpu"):
        env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([sys.executable, "-m", "tests.portable.worker", *args, "--threads", config["threads"]],
                   cwd=ROOT, env=env, check=True, timeout=600)


def check_portable(version_dir: Path, workdir: Path) -> list[str]:
    """Problems found (empty: every stream decodes identically in every configuration)."""
    streams = workdir / "streams.npz"
    _run(ENCODER, "encode", str(version_dir), str(streams))
    results = []
    for i, config in enumerate(DECODERS):
        out = workdir / f"decoded_{i}.npz"
        _run(config, "decode", str(version_dir), str(streams), str(out))
        results.append((config, np.load(out)))
    encoded = np.load(streams)
    problems = []
    reference = results[0][1]
    for config, decoded in results:
        for key in decoded.files:
            if key.startswith("error_"):
                problems.append(f"{config}: stream {key[6:]} failed: {decoded[key].tobytes().decode()}")
        for key in encoded.files:
            if key.startswith("symbols_") and key in decoded.files and not np.array_equal(decoded[key], encoded[key]):
                problems.append(f"{config}: {key} differs from what the encoder coded")
        for key in decoded.files:
            if key.startswith("pixels_") and key in reference.files:
                diff = int(np.abs(decoded[key].astype(int) - reference[key].astype(int)).max())
                if diff > 1:
                    problems.append(f"{config}: {key} differs by {diff} levels")
    return problems


@pytest.mark.skipif(_newest_natural() is None, reason="no natural model in models_store")
def test_natural_streams_decode_identically_in_every_tensorflow_configuration(tmp_path: Path) -> None:
    version_dir = _newest_natural()
    assert version_dir is not None
    assert check_portable(version_dir, tmp_path) == []
