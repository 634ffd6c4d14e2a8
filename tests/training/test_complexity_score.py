"""The complexity-corrected anomaly score (training/complexity.py, `--anomaly-score complexity`):
its PNG size, its line, and that calibration and the exported signature compute the same score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from complexity_store import SPLIT, VAL_FRACTION, ComplexityStore, build

from contract.card import AnomalySpec, ComplexityFit, ModelCard, ScoreStats
from training import complexity, data


@pytest.fixture(scope="module")
def cx(tmp_path_factory: pytest.TempPathFactory) -> ComplexityStore:
    return build(tmp_path_factory.mktemp("complexity"))


def _signature_outputs(version_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    signature = tf.saved_model.load(str(version_dir)).signatures["anomaly_score"]
    return {k: v.numpy().astype(np.float64) for k, v in signature(images=tf.constant(images)).items()}


def test_png_size_is_the_length_of_a_png_of_the_8_bit_image():
    rng = np.random.default_rng(0)
    flat = np.full((1, 24, 24, 3), 0.5, np.float32)
    noise = rng.uniform(0, 1, (1, 24, 24, 3)).astype(np.float32)
    bpp = complexity.png_bits_per_pixel(tf.constant(np.concatenate([flat, noise]))).numpy()
    for image, found in zip((flat, noise), bpp):
        u8 = np.round(image[0] * 255).astype(np.uint8)
        assert found == pytest.approx(8 * len(tf.io.encode_png(u8).numpy()) / (24 * 24))
    assert bpp[1] > 5 * bpp[0]  # noise does not compress, a flat image does


def test_the_line_is_least_squares_on_logs_and_the_score_its_residual():
    rng = np.random.default_rng(1)
    png_bpp = rng.uniform(2, 20, 200)
    mse = np.exp(-6.0 + 1.5 * np.log(png_bpp) + rng.normal(0, 0.1, 200))
    line = complexity.fit_line(mse, png_bpp)
    assert line["intercept"] == pytest.approx(-6.0, abs=0.1) and line["slope"] == pytest.approx(1.5, abs=0.05)
    assert line["n"] == 200 and line["r2"] > 0.9 and line["residual_std"] == pytest.approx(0.1, abs=0.02)
    score = complexity.corrected_score(tf.constant(mse, tf.float32), tf.constant(png_bpp, tf.float32),
                                       tf.constant([line["intercept"], line["slope"]], tf.float32)).numpy()
    assert np.mean(score) == pytest.approx(0.0, abs=1e-4) and np.std(score) == pytest.approx(line["residual_std"], rel=1e-3)
    with pytest.raises(ValueError, match="at least 3"):
        complexity.fit_line(mse[:2], png_bpp[:2])


def test_the_card_states_the_line_only_for_the_complexity_score():
    stats = ScoreStats(n=3, mean=0, std=1, min=-1, max=1, quantiles={})
    line = ComplexityFit(intercept=-8, slope=1.2, n=30, r2=0.4, residual_std=0.5, fitted_on="held-out")
    with pytest.raises(ValueError, match="fitted line"):
        AnomalySpec(score="complexity", threshold=1.0, calibration=stats, calibrated_on="x")
    with pytest.raises(ValueError, match="fitted line"):
        AnomalySpec(score="mse", threshold=1.0, calibration=stats, calibrated_on="x", complexity=line)
    spec = AnomalySpec(score="complexity", threshold=1.0, calibration=stats, calibrated_on="x", complexity=line)
    assert AnomalySpec.model_validate_json(spec.model_dump_json()) == spec
    assert AnomalySpec.model_validate({"threshold": 0.1, "calibration": stats.model_dump(),
                                       "calibrated_on": "an old card"}).complexity is None


def test_the_line_is_fitted_on_normal_validation_images_only(cx: ComplexityStore):
    card = ModelCard.read(cx.version_dir)
    assert card.anomaly is not None and card.anomaly.score == "complexity" and card.anomaly.normal_classes == [0]
    line = card.anomaly.complexity
    normal = data.load(cx.spec, split=SPLIT, classes=[0], val_fraction=VAL_FRACTION, seed=0)
    assert line.n == len(normal.val) and line.fitted_on == card.anomaly.calibrated_on
    found = _signature_outputs(cx.version_dir, normal.val)
    refit = complexity.fit_line(found["mse"], found["png_bpp"])
    assert (line.intercept, line.slope) == pytest.approx((refit["intercept"], refit["slope"]), abs=1e-4)
    # the same validation draw with its anomalies kept gives another line: they were left out
    everything = data.load(cx.spec, split=SPLIT, val_fraction=VAL_FRACTION, seed=0)
    assert len(everything.val) > len(normal.val)
    mixed = _signature_outputs(cx.version_dir, everything.val)
    other = complexity.fit_line(mixed["mse"], mixed["png_bpp"])
    assert abs(other["intercept"] - line.intercept) > 1e-2 or abs(other["slope"] - line.slope) > 1e-2


def test_calibration_and_the_exported_signature_compute_the_same_score(cx: ComplexityStore):
    card = ModelCard.read(cx.version_dir)
    line = card.anomaly.complexity
    normal = data.load(cx.spec, split=SPLIT, classes=[0], val_fraction=VAL_FRACTION, seed=0)
    found = _signature_outputs(cx.version_dir, normal.val)
    # the signature's score is the complexity component, the residual of the card's line...
    assert np.array_equal(found["score"], found["complexity"])
    expected = np.log(found["mse"]) - (line.intercept + line.slope * np.log(found["png_bpp"]))
    np.testing.assert_allclose(found["score"], expected, atol=1e-4)
    # ...and the threshold's statistics (scored by the in-memory model at export) are those of the
    # scores the SavedModel gives the same held-out images now
    stats = card.anomaly.calibration
    assert stats.n == len(found["score"])
    assert (stats.mean, stats.min, stats.max) == pytest.approx(
        (found["score"].mean(), found["score"].min(), found["score"].max()), abs=1e-5)
    # fitted and calibrated on the same images: their scores are the line's residuals (mean 0)
    assert stats.mean == pytest.approx(0.0, abs=1e-4) and stats.std == pytest.approx(line.residual_std, rel=1e-3)
    assert card.anomaly.threshold > stats.quantiles["0.5"]


def test_the_png_size_is_of_the_image_the_model_sees(cx: ComplexityStore):
    """8-bit pixels in, PNG of exactly those pixels: the model's input as the service gives it."""
    pixels = np.round(np.random.default_rng(5).uniform(0, 1, (2, 16, 16, 3)) * 255) / 255
    found = _signature_outputs(cx.version_dir, pixels.astype(np.float32))
    for image, bpp in zip(pixels, found["png_bpp"]):
        png = tf.io.encode_png(np.round(image * 255).astype(np.uint8)).numpy()
        assert bpp == pytest.approx(8 * len(png) / 256)
