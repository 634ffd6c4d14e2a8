"""The models shipped in models_store/ load through their signatures and behave as their cards say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from contract.card import ModelCard
from examples.make_digits import default_idx_dir
from examples.make_digits import held_out_digits as held_out_digits_of
from training.data import read_idx

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def held_out_digits() -> dict[int, np.ndarray]:
    """The README's example digits (examples/make_digits.py), read from the MNIST IDX folder."""
    idx_dir = default_idx_dir()
    if not (idx_dir / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no MNIST test split at {idx_dir} (set AEC_DATASETS)")
    return held_out_digits_of(read_idx(idx_dir / "t10k-images-idx3-ubyte.gz"),
                              read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz"))


def _newest(name: str) -> Path:
    return max((p for p in (ROOT / "models_store" / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_anomaly_model_separates_its_normal_digit_from_others(held_out_digits):
    version_dir = _newest("mnist-anomaly-0")
    card = ModelCard.read(version_dir)
    assert card.anomaly is not None and card.anomaly.normal_classes == [0] and card.anomaly.score == "ssim"
    scores = tf.saved_model.load(str(version_dir)).signatures["anomaly_score"]
    verdicts = {}
    for digit in (0, 1, 7):
        image = (held_out_digits[digit].astype(np.float32) / 255.0)[None, ..., None]
        verdicts[digit] = float(scores(images=tf.constant(image))["score"][0]) > card.anomaly.threshold
    assert verdicts == {0: False, 1: True, 7: True}


@pytest.mark.parametrize("name", ["mnist", "mnist-anomaly-0", "natural"])
def test_shipped_cards_validate_and_record_their_command(name):
    card = ModelCard.read(_newest(name))
    assert card.name == name and card.training.command.startswith("python -m training train")
    # small enough for a git checkout: each version, and every version kept (old streams keep decoding)
    size = lambda path: sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size(_newest(name)) < 24 * 2**20
    assert size(ROOT / "models_store") < 64 * 2**20


def test_shipped_codec_trades_bits_for_quality_between_its_levels():
    from training.evaluate import coder_from_saved_model, evaluate

    version_dir = _newest("natural")
    card = ModelCard.read(version_dir)
    assert card.rate is not None and card.rate.min_quality == 1 and card.rate.max_quality >= 8
    levels = range(1, int(card.rate.max_quality) + 1)
    assert [card.metrics[f"bpp_q{q}"] for q in levels] == sorted(card.metrics[f"bpp_q{q}"] for q in levels)
    y, x = np.mgrid[0:96, 0:160] / 40.0
    photo = np.stack([0.5 + 0.3 * np.sin(x + 2 * y), 0.5 + 0.2 * np.cos(3 * x - y), 0.4 + 0.1 * x / 4], -1)[None]
    found = [evaluate(coder_from_saved_model(version_dir, q), photo.astype(np.float32)).metrics for q in (3, 3.5, 4)]
    assert found[0]["bpp"] < found[1]["bpp"] < found[2]["bpp"]
    assert found[0]["psnr"] < found[1]["psnr"] < found[2]["psnr"]
