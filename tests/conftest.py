"""Shared fixtures: a tiny models_store trained and exported in seconds, on CPU, without network.

`model_store` (session) holds:
- `tiny/1`: KerasCAE (28×28×1, latent 8) trained ~20 steps on synthetic blob "digits", with an anomaly
  threshold calibrated on held-out blobs (the 0.99 quantile of their scores), size policy `resize`;
- `tiny-reject/1`: the same SavedModel with size policy `reject` and no anomaly section;
- `codec-tiny/1`: a tiny any-size learned codec. A failure to build it is an error of every test
  that uses the store, never a skip: the codec is the product, not an optional extra.
The tests never write into it; tests that change a store copy it first.
`variable_rate_store` (session): `codec-vr/1` and `/2`, a tiny codec with two rate levels (quality 1–2),
version 2 trained a few steps further.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TINY = "tiny"
TINY_REJECT = "tiny-reject"
CODEC = "codec-tiny"
VR_NAME = "codec-vr"
VR_LEVELS = (0.003, 0.05)


@dataclass(frozen=True)
class StoreInfo:
    path: Path
    tiny: str
    tiny_reject: str
    codec: str
    normal: np.ndarray  # held-out normal images [n, 28, 28, 1] with scores below the threshold
    threshold: float
    build_seconds: float


def blob_images(n: int, seed: int, size: int = 28) -> np.ndarray:
    """Synthetic 'digits': 1-3 bright Gaussian blobs on black, float32 [n, size, size, 1] in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        img = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
            sigma = rng.uniform(0.07, 0.14) * size
            img = np.maximum(img, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)))
        out[i, ..., 0] = img
    return out


def smooth_fields(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colour fields (coarse noise upsampled), float32 [n, h, w, 3] in [0, 1]."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=(n, 4, 4, 3)).astype(np.float32)
    return np.clip(tf.image.resize(coarse, (height, width), method="bicubic").numpy(), 0, 1).astype(np.float32)


def _train(model, images: np.ndarray, steps: int, batch: int, lr: float, traced: bool = True) -> None:
    """A few Adam steps; `traced=False` runs eagerly, cheaper for a handful of steps of a big graph."""
    import keras
    import tensorflow as tf

    from training.train import make_train_step

    step = make_train_step(model, keras.optimizers.Adam(learning_rate=lr), traced=traced)
    for i in range(steps):
        start = (i * batch) % (len(images) - batch + 1)
        step(tf.constant(images[start : start + batch]))


def _build_cae(store: Path) -> tuple[np.ndarray, float]:
    import keras
    import tensorflow as tf

    from contract.card import AnomalySpec, InputSpec, ModelCard, Provenance, ScoreStats
    from training.export import export_model
    from training.models.keras_cae import KerasCAE

    keras.utils.set_random_seed(0)
    train, held_out = blob_images(256, seed=1), blob_images(64, seed=2)
    model = KerasCAE((28, 28, 1), latent_dim=8)
    model(train[:2])
    _train(model, train, steps=20, batch=32, lr=2e-3)
    model.finalize(tf.data.Dataset.from_tensor_slices(train).batch(64))
    scores = model.anomaly_score(tf.constant(held_out))["score"].numpy().astype(float)
    threshold = float(np.quantile(scores, 0.99))
    stats = ScoreStats(
        n=len(scores), mean=float(scores.mean()), std=float(scores.std()), min=float(scores.min()),
        max=float(scores.max()), quantiles={q: float(np.quantile(scores, float(q))) for q in ("0.5", "0.95", "0.99")},
    )
    provenance = Provenance(dataset="synthetic-blobs", command="tests/conftest.py", steps=20, seed=0)
    card = ModelCard(
        name=TINY, version=1, architecture="keras_cae", description="test fixture",
        config=model.get_config(), input=model.input_spec_card(), latents=model.latent_specs(),
        tables_sha256=model.fingerprint(), training=provenance,
        anomaly=AnomalySpec(score="mse", threshold=threshold, target_fpr=0.01, calibration=stats,
                            calibrated_on="64 held-out synthetic blob images"),
    )
    version_dir = export_model(model, card, store)
    # Same SavedModel, another name: size policy `reject`, no anomaly section.
    reject_dir = store / TINY_REJECT / "1"
    shutil.copytree(version_dir, reject_dir)
    reject_card = card.model_copy(update={
        "name": TINY_REJECT, "anomaly": None,
        "input": InputSpec(height=28, width=28, channels=1, size_policy="reject"),
    })
    (reject_dir / "model.json").unlink()
    reject_card.write(reject_dir)
    normal = held_out[scores <= np.quantile(scores, 0.5)]
    return normal, threshold


def _build_codec(store: Path) -> None:
    """The tiny any-size codec."""
    import keras
    import tensorflow as tf

    from contract.card import ModelCard, Provenance
    from training.export import export_model
    from training.models.registry import get_architecture

    keras.utils.set_random_seed(0)
    model = get_architecture("codec")(input_shape=(None, None, 3), num_filters=8, latent_channels=12, lmbda=0.01)
    images = smooth_fields(8, 64, 64, seed=0)
    model(images[:1])
    _train(model, images, steps=4, batch=4, lr=3e-3, traced=False)
    model.finalize(tf.data.Dataset.from_tensor_slices(images).batch(4))
    card = ModelCard(
        name=CODEC, version=1, architecture="codec", description="test fixture", config=model.get_config(),
        input=model.input_spec_card(), latents=model.latent_specs(), tables_sha256=model.fingerprint(),
        training=Provenance(dataset="synthetic-fields", command="tests/conftest.py", steps=4, seed=0),
    )
    export_model(model, card, store)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> StoreInfo:
    started = time.perf_counter()
    store = tmp_path_factory.mktemp("models_store")
    normal, threshold = _build_cae(store)
    _build_codec(store)
    return StoreInfo(
        path=store, tiny=TINY, tiny_reject=TINY_REJECT, codec=CODEC, normal=normal, threshold=threshold,
        build_seconds=time.perf_counter() - started,
    )


@pytest.fixture(scope="session")
def variable_rate_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One variable-rate codec (qualities 1–2) as version 1, and a further-trained version 2."""
    import keras
    import tensorflow as tf

    from contract.card import ModelCard, Provenance
    from training.export import export_model
    from training.models.codec import Codec
    from training.train import make_train_step

    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("rates")
    model = Codec(input_shape=(None, None, 3), num_filters=8, latent_channels=12, lmbdas=list(VR_LEVELS))
    rng = np.random.default_rng(0)
    images = np.clip(tf.image.resize(rng.uniform(size=(8, 4, 4, 3)), (64, 64), method="bicubic").numpy(), 0, 1)
    model(images[:1])
    step = make_train_step(model, keras.optimizers.Adam(3e-3), traced=False)
    for version in (1, 2):
        for i in range(4):
            step(tf.constant(images[2 * i : 2 * i + 2], tf.float32))
        model.finalize(tf.data.Dataset.from_tensor_slices(images.astype(np.float32)).batch(4))
        card = ModelCard(
            name=VR_NAME, version=version, architecture="codec", description="test fixture",
            config=model.get_config(), input=model.input_spec_card(), latents=model.latent_specs(),
            tables_sha256=model.fingerprint(), rate=model.rate_spec(),
            training=Provenance(dataset="synthetic", command="tests/conftest.py", steps=4 * version, seed=1),
        )
        export_model(model, card, path)
    return path


EFFORT_NAME = "codec-effort"


@pytest.fixture(scope="session")
def effort_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `codec_cc` (three levels, level-conditional synthesis) with the encoder effort setting."""
    import keras
    import tensorflow as tf

    from contract.card import ModelCard, Provenance
    from training.export import export_model
    from training.models.codec_cc import ChannelCodec
    from training.train import make_train_step

    keras.utils.set_random_seed(2)
    path = tmp_path_factory.mktemp("effort")
    model = ChannelCodec(num_filters=8, latent_channels=12, hyper_channels=8, support_channels=8, slices=[4, 8],
                         param_hidden=[8, 8], lrp_hidden=8, lmbdas=[0.002, 0.02, 0.2], level_synthesis=True)
    rng = np.random.default_rng(0)
    images = np.clip(tf.image.resize(rng.uniform(size=(8, 6, 6, 3)), (64, 64), method="bicubic").numpy(), 0, 1)
    model(images[:1])
    step = make_train_step(model, keras.optimizers.Adam(3e-3), traced=False)
    for i in range(4):
        step(tf.constant(images[2 * i : 2 * i + 2], tf.float32))
    model.set_rate_level(1)
    model.finalize(tf.data.Dataset.from_tensor_slices(images.astype(np.float32)).batch(4))
    card = ModelCard(
        name=EFFORT_NAME, version=1, architecture="codec_cc", description="test fixture", config=model.get_config(),
        input=model.input_spec_card(), latents=model.latent_specs(), tables_sha256=model.fingerprint(),
        rate=model.rate_spec(), effort=model.effort_spec(),
        training=Provenance(dataset="synthetic", command="tests/conftest.py", steps=4, seed=2))
    export_model(model, card, path)
    return path


@pytest.fixture(scope="session")
def server(model_store: StoreInfo) -> Iterator:
    """The main live server over the fixture store (no hot reload: the store never changes under it)."""
    from service_helpers import MAX_PIXELS, MAX_UPLOAD, live_server

    with live_server(
        models_dir=model_store.path,
        default_model=model_store.tiny,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        max_files=8,
        max_batch_size=8,
        max_wait_ms=20,
        reload_interval_s=0,
        log_level="WARNING",
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server) -> Iterator:
    """An httpx client for `server`."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
