"""End to end: a model exported with `--anomaly-score complexity` answers /anomaly-score with the
complexity-corrected score (computed inside its SavedModel; the service only reads the card's threshold),
the same number recomputed here from its reconstruction, TensorFlow's PNG encoder and the card's line."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tensorflow as tf
from complexity_store import NAME, SPLIT, VAL_FRACTION, ComplexityStore, build
from service_helpers import LiveServer, live_server, to_bytes

from contract.card import ModelCard
from training import data


@pytest.fixture(scope="module")
def cx(tmp_path_factory: pytest.TempPathFactory) -> ComplexityStore:
    return build(tmp_path_factory.mktemp("complexity-endpoint"))


@pytest.fixture(scope="module")
def served(cx: ComplexityStore) -> Iterator[LiveServer]:
    with live_server(models_dir=cx.store, log_level="WARNING") as srv:
        yield srv


def _by_hand(cx: ComplexityStore, image: np.ndarray) -> float:
    """log mse of the served reconstruction minus the card's line at log PNG bits per pixel."""
    line = ModelCard.read(cx.version_dir).anomaly.complexity
    recon = tf.saved_model.load(str(cx.version_dir)).signatures["reconstruct"](images=tf.constant(image[None]))
    mse = float(np.mean((recon["images"].numpy()[0].astype(np.float64) - image) ** 2))
    png = tf.io.encode_png(np.round(image * 255).astype(np.uint8)).numpy()
    bpp = 8 * len(png) / (image.shape[0] * image.shape[1])
    return float(np.log(mse) - (line.intercept + line.slope * np.log(bpp)))


def test_anomaly_score_endpoint_returns_the_corrected_score(cx: ComplexityStore, served: LiveServer):
    card = ModelCard.read(cx.version_dir)
    test = data.load(cx.spec, split=SPLIT, val_fraction=VAL_FRACTION, seed=0).test  # both classes
    answers = []
    for image in test[:6]:
        response = httpx.post(f"{served.url}/anomaly-score", params={"model": NAME},
                              files={"file": ("x.png", to_bytes(image), "image/png")}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["score_kind"] == "complexity" and body["size_action"] == "none"
        assert body["threshold"] == card.anomaly.threshold
        assert body["score"] == pytest.approx(_by_hand(cx, image), abs=1e-4)
        assert body["is_anomaly"] == (body["score"] > card.anomaly.threshold)
        answers.append(body["score"])
    assert len(set(answers)) == len(answers)  # a score per image, not a constant


def test_a_resized_upload_is_scored_at_the_model_size(cx: ComplexityStore, served: LiveServer):
    """A 32×32 upload is resized to 16×16 first: its PNG size is that of the 16×16 image."""
    from service.inference import imaging

    image = data.load(cx.spec, split=SPLIT, val_fraction=VAL_FRACTION, seed=0).test[0]
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    response = httpx.post(f"{served.url}/anomaly-score", params={"model": NAME},
                          files={"file": ("x.png", to_bytes(big), "image/png")}, timeout=30)
    assert response.status_code == 200 and response.json()["size_action"] == "resized"
    seen = imaging.resize(np.round(big * 255).astype(np.uint8), 16, 16).astype(np.float32) / 255
    assert response.json()["score"] == pytest.approx(_by_hand(cx, seen), abs=1e-4)
