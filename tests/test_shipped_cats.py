"""The shipped `cats` model (models_store/README.md, "cats"): its card, its size, and, where the datasets
are present, its complexity line and its AUROC against other photos as measured there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from contract.card import ModelCard
from training import complexity
from training.recipes.cats import model_pixels

ROOT = Path(__file__).resolve().parents[1]
VERSION = ROOT / "models_store" / "cats" / "1"
DATASETS = Path(os.environ.get("AEC_DATASETS", ROOT.parent / "shared" / "datasets"))


def _scores(paths: list[Path]) -> dict[str, np.ndarray]:
    signature = tf.saved_model.load(str(VERSION)).signatures["anomaly_score"]
    images = np.stack([model_pixels(p) for p in paths]).astype(np.float32) / 255
    found: dict[str, list] = {}
    for start in range(0, len(images), 200):
        for key, value in signature(images=tf.constant(images[start : start + 200])).items():
            if key != "error_map":
                found.setdefault(key, []).append(value.numpy().astype(np.float64))
    return {k: np.concatenate(v) for k, v in found.items()}


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"no {path} (set AEC_DATASETS)")
    return path


def test_card_splits_and_size():
    card = ModelCard.read(VERSION)
    assert card.name == "cats" and card.architecture == "conv_ae" and card.input.height == card.input.width == 48
    assert card.training.command.startswith("python -m training train") and "--anomaly-score complexity" in card.training.command
    assert card.anomaly.score == "complexity" and card.anomaly.complexity.n == 300
    assert card.latents[0].shape == [12, 12, 12]  # 1,728 values: 25% of 48 × 48 × 3
    splits = json.loads((VERSION / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [2700, 300, 800]
    assert not set(splits["train"]) & set(splits["validation"]) and not set(splits["test"]) & set(splits["validation"])
    assert splits["test"][0] == "cat.3200.jpg" and splits["test"][-1] == "cat.3999.jpg"
    assert all(f.stat().st_size < 10 * 2**20 for f in VERSION.rglob("*") if f.is_file())


def test_the_line_comes_from_the_validation_cats():
    cats = _need(DATASETS / "cats" / "train")
    line = ModelCard.read(VERSION).anomaly.complexity
    validation = json.loads((VERSION / "splits.json").read_text())["validation"]
    found = _scores([cats / name for name in validation])
    refit = complexity.fit_line(found["mse"], found["png_bpp"])
    assert (refit["intercept"], refit["slope"]) == pytest.approx((line.intercept, line.slope), abs=1e-3)


def test_test_cats_against_mcmaster_and_set14():
    from sklearn.metrics import roc_auc_score

    cats = _need(DATASETS / "cats" / "train")
    natural = _need(DATASETS / "natural")
    test = json.loads((VERSION / "splits.json").read_text())["test"]
    others = sorted((natural / "McMaster").glob("*.png")) + sorted((natural / "Set14").glob("*.png"))
    normal, anomalous = _scores([cats / name for name in test]), _scores(others)
    labels = np.r_[np.zeros(len(test)), np.ones(len(others))]
    auroc = roc_auc_score(labels, np.r_[normal["score"], anomalous["score"]])
    assert auroc >= 0.9  # measured 0.910 (models_store/README.md)
    card = ModelCard.read(VERSION)
    assert np.mean(normal["score"] > card.anomaly.threshold) <= 0.02  # target 1%, measured 1.0%
