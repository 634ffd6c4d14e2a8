"""The models shipped in models_store/ load through their signatures and behave as their cards say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from service.contract.card import ModelCard

ROOT = Path(__file__).resolve().parents[1]


def _digit(name: str) -> np.ndarray:
    with Image.open(ROOT / "examples" / name) as img:
        return (np.asarray(img.convert("L"), np.float32) / 255.0)[None, ..., None]


def _newest(name: str) -> Path:
    return max((p for p in (ROOT / "models_store" / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_anomaly_model_separates_its_normal_digit_from_others():
    version_dir = _newest("mnist-anomaly-0")
    card = ModelCard.read(version_dir)
    assert card.anomaly is not None and card.anomaly.normal_classes == [0] and card.anomaly.score == "ssim"
    scores = tf.saved_model.load(str(version_dir)).signatures["anomaly_score"]
    verdicts = {name: float(scores(images=tf.constant(_digit(name)))["score"][0]) > card.anomaly.threshold
                for name in ["digit-0.png", "digit-1.png", "digit-7.png"]}
    assert verdicts == {"digit-0.png": False, "digit-1.png": True, "digit-7.png": True}


@pytest.mark.parametrize("name", ["mnist", "mnist-anomaly-0", "natural-q1", "natural-q2", "natural-q3", "natural-q4", "natural-q5"])
def test_shipped_cards_validate_and_record_their_command(name):
    card = ModelCard.read(_newest(name))
    assert card.name == name and card.training.command.startswith("python -m training train")
    assert sum(f.stat().st_size for f in (ROOT / "models_store" / name).rglob("*") if f.is_file()) < 10 * 2**20
