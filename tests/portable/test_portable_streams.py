"""Streams decode on any machine: encode under one TensorFlow configuration, decode under others
(bench/portable.py: separate processes, oneDNN on/off × intra-op threads 1/all, the GPU when present).
Float entropy parameters fail this (natural version 8 loses streams); integer ones must not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import portable

ROOT = Path(__file__).resolve().parents[2]


def _newest_natural() -> Path | None:
    folder = ROOT / "models_store" / "natural"
    versions = [p for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(versions, key=lambda p: int(p.name)) if versions else None


@pytest.mark.skipif(_newest_natural() is None, reason="no natural model in models_store")
def test_natural_streams_decode_identically_in_every_tensorflow_configuration(tmp_path: Path) -> None:
    version_dir = _newest_natural()
    assert version_dir is not None
    report = portable.check(version_dir, tmp_path, count=24)  # 24 photo-like images × qualities 2, 5, 8
    assert [r.streams for r in report.results] == [72] * len(portable.DECODERS)
    assert report.problems == [], portable.render(report)
