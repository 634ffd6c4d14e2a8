"""Every architecture trains, finalizes, exports, and serves from its SavedModel without training code.

Tiny models and a few optimiser steps on synthetic blurred blobs (fixed seed), so the file runs in about a
minute on two CPU cores. The SavedModels are loaded in a fresh interpreter that never imports
`training`, which is exactly the service's situation.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from contract.card import ModelCard, Provenance
from training.export import export_model
from training.models.base import QuantizedLatentAutoencoder
from training.models.registry import available, get_architecture
from training.train import make_train_step

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURES = ["keras_cae", "single_layer_cae", "conv_ae", "dense_ae"]

# (architecture, input shape, small constructor kwargs); conv_ae covers both downsample modes and an odd size.
CASES = [
    pytest.param("keras_cae", (28, 28, 1), {"latent_dim": 8}, id="keras_cae"),
    pytest.param("single_layer_cae", (28, 28, 1), {"filters": 4, "l2_penalty": 1e-4}, id="single_layer_cae"),
    pytest.param("conv_ae", (28, 28, 1), {"filters": [8, 16], "latent_channels": 4}, id="conv_ae-maxpool"),
    pytest.param(
        "conv_ae", (30, 30, 1), {"filters": [8, 16], "latent_channels": 4, "downsample": "strided"},
        id="conv_ae-strided-30x30",
    ),
    pytest.param("dense_ae", (28, 28, 1), {"hidden": [64, 32], "compression_ratio": 1 / 16}, id="dense_ae"),
]
STEPS = 15
BATCH = 16


def blobs(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Images of 1–3 Gaussian blobs in [0, 1]: smooth, structured, and cheap to learn."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = np.zeros((n, h, w, c), np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx, sigma = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 4.0)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            images[i] += blob[..., None] * rng.uniform(0.5, 1.0, size=c).astype(np.float32)
    return np.clip(images, 0.0, 1.0)


def train(model, images: np.ndarray, steps: int = STEPS) -> tuple[float, float]:
    """A few Adam steps on `compute_losses(batch)["loss"]`; returns the loss on a fixed batch before/after."""
    optimizer = keras.optimizers.Adam(2e-3)
    probe = tf.constant(images[:BATCH])
    before = float(model.compute_losses(probe, training=True)["loss"])

    step = make_train_step(model, optimizer)

    for i in range(steps):
        start = (i * BATCH) % len(images)
        step(tf.constant(images[start:start + BATCH]))
    after = float(model.compute_losses(probe, training=True)["loss"])
    return before, after


# Runs in a fresh interpreter, like the service: SavedModel + model card + entropy coder, no `training`.
# One interpreter serves every exported model (starting TensorFlow is the slow part).
SERVE_SCRIPT = r"""
import json
import sys
import numpy as np
import tensorflow as tf
from contract.card import ModelCard
from contract.entropy import decode_latents, encode_latents

def serve(version_dir, x_path, out_path):
    card = ModelCard.read(version_dir)
    sigs = tf.saved_model.load(version_dir).signatures
    x = tf.constant(np.load(x_path))
    out = {"reconstruct": sigs["reconstruct"](images=x)["images"].numpy(),
           "serving_default": sigs["serving_default"](images=x)["images"].numpy()}
    codes = sigs["encode"](images=x)
    out["decode_of_encode"] = sigs["decode"](**codes)["images"].numpy()
    tables = {name: t.numpy() for name, t in sigs["entropy_tables"]().items()}
    first = {spec.name: codes[spec.name].numpy()[0] for spec in card.latents}
    payloads = encode_latents(card.latents, first, tables)
    decoded = decode_latents(card.latents, payloads, tables)
    for name, symbols in first.items():
        assert np.array_equal(decoded[name][0], symbols), f"entropy coding did not round-trip latent {name}"
    out["decode_of_bitstream"] = sigs["decode"](**{k: tf.constant(v) for k, v in decoded.items()})["images"].numpy()
    scores = sigs["anomaly_score"](images=x)
    out["score"], out["error_map"] = scores["score"].numpy(), scores["error_map"].numpy()
    out["payload_bytes"] = np.array(sum(len(p) for _, p in payloads))
    for name, t in tables.items():
        out["table_" + name] = t
    for name in first:
        out["code_" + name] = codes[name].numpy()
    assert "training" not in sys.modules, "the service side must not import training code"
    np.savez(out_path, **out)

for job in json.loads(sys.argv[1]):
    serve(*job)
"""


def serve_in_subprocess(jobs: list[tuple[Path, Path, Path]]) -> None:
    """Serve each (version_dir, x.npy, out.npz) job from its SavedModel in one fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, json.dumps([[str(p) for p in job] for job in jobs])],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@dataclass
class Exported:
    model: QuantizedLatentAutoencoder
    card: ModelCard
    version_dir: Path
    loss_before: float
    loss_after: float
    x: np.ndarray
    served: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Exported]:
    """Train, finalize and export every case, then serve them all from one fresh interpreter."""
    root = tmp_path_factory.mktemp("architectures")
    results, jobs = {}, []
    for case in CASES:
        (name, shape, kwargs), case_id = case.values, case.id
        keras.utils.set_random_seed(0)
        images = blobs(96, shape, seed=1)
        model = get_architecture(name)(shape, **kwargs)
        before, after = train(model, images)
        model.finalize(tf.data.Dataset.from_tensor_slices(images).batch(BATCH))
        card = ModelCard(
            name=case_id.lower().replace("_", "-"), version=1, architecture=name, config=model.get_config(),
            input=model.input_spec_card(), latents=model.latent_specs(), tables_sha256=model.fingerprint(),
            training=Provenance(dataset="synthetic-blobs", command="pytest", steps=STEPS, seed=0),
            metrics={"loss": after},
        )
        version_dir = export_model(model, card, root / "store")
        x = blobs(4, shape, seed=2)
        np.save(root / f"{case_id}.npy", x)
        jobs.append((version_dir, root / f"{case_id}.npy", root / f"{case_id}.npz"))
        results[case_id] = Exported(model, card, version_dir, before, after, x, {})
    serve_in_subprocess(jobs)
    for case_id, (_, _, out_path) in zip(results, jobs):
        with np.load(out_path) as served:
            results[case_id].served = dict(served)
    return results


def test_all_architectures_are_registered():
    assert set(ARCHITECTURES) <= set(available())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_config_reports_every_constructor_argument(name):
    cls = get_architecture(name)
    params = [p for klass in cls.__mro__ if "__init__" in vars(klass) and klass.__module__.startswith("training.")
              for p in inspect.signature(klass.__init__).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    model = cls()
    config = model.get_config()
    assert {p.name for p in params} == set(config), "get_config must report each constructor argument"
    json.dumps(config)  # it is written into the model card
    rebuilt = cls(**config)
    assert rebuilt.get_config() == config
    assert rebuilt.latent_shape == model.latent_shape
    assert cls.architecture == name


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_train_finalize_export_and_serve_without_training_code(case_id, exported):
    e = exported[case_id]
    model, card, x, served = e.model, e.card, e.x, e.served
    assert np.isfinite(e.loss_after) and e.loss_after < e.loss_before, (
        f"{case_id}: loss did not go down ({e.loss_before:.4f} -> {e.loss_after:.4f})"
    )
    assert ModelCard.read(e.version_dir) == card

    expected = model.reconstruct(tf.constant(x)).numpy()
    expected_codes = model.encode(tf.constant(x))
    assert expected.shape == x.shape
    np.testing.assert_allclose(served["reconstruct"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["serving_default"], served["reconstruct"])
    np.testing.assert_allclose(served["decode_of_encode"], served["reconstruct"], atol=1e-6)
    np.testing.assert_allclose(served["decode_of_bitstream"][0], served["reconstruct"][0], atol=1e-6)
    for spec in card.latents:
        code = served["code_" + spec.name]
        assert code.shape == (len(x), *model.latent_shape)
        assert code.min() >= spec.min_symbol and code.max() <= spec.max_symbol
        np.testing.assert_array_equal(code, expected_codes[spec.name].numpy())
        np.testing.assert_allclose(served["table_" + spec.name], model.entropy_tables()[spec.name].numpy())
    assert served["score"].shape == (len(x),) and served["error_map"].shape == (len(x), *x.shape[1:3])
    assert 0 < int(served["payload_bytes"]) < np.prod(model.latent_shape) + 64  # at most ~8 bits per value


@pytest.mark.parametrize("downsample", ["maxpool", "strided"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (30, 30, 1), (31, 29, 3)])
def test_conv_ae_pads_and_crops_any_fixed_size(downsample, shape):
    model = get_architecture("conv_ae")(shape, filters=[4, 8], latent_channels=3, downsample=downsample)
    x = tf.constant(blobs(2, shape))
    latent = model.encode_latent(x)
    assert latent.shape == (2, -(-shape[0] // 4), -(-shape[1] // 4), 3) == (2, *model.latent_shape)
    recon = model(x)
    assert recon.shape == x.shape
    assert float(tf.reduce_min(recon)) >= 0.0 and float(tf.reduce_max(recon)) <= 1.0
    assert set(model.compute_losses(x)) >= {"loss", "bce", "mse"}


def test_conv_ae_rejects_unknown_downsampling():
    with pytest.raises(ValueError, match="downsample"):
        get_architecture("conv_ae")((28, 28, 1), downsample="avgpool")


@pytest.mark.parametrize(("ratio", "expected"), [(1 / 4, 196), (1 / 9, 87), (1 / 16, 49)])
def test_dense_ae_latent_size_follows_compression_ratio(ratio, expected):
    model = get_architecture("dense_ae")((28, 28, 1), hidden=[16], compression_ratio=ratio)
    assert model.latent_dim == expected == round(ratio * 28 * 28)
    assert model.latent_shape == (expected,)
    assert model.encode_latent(tf.constant(blobs(2, (28, 28, 1)))).shape == (2, expected)
    assert model.latent_specs()[0].channels == expected


def test_dense_ae_explicit_latent_dim_overrides_ratio():
    model = get_architecture("dense_ae")((28, 28, 1), hidden=[16], compression_ratio=1 / 4, latent_dim=10)
    assert model.latent_shape == (10,) and model.get_config()["latent_dim"] == 10


def test_dense_ae_batch_norm_follows_training_flag():
    model = get_architecture("dense_ae")((28, 28, 1), hidden=[16], latent_dim=8)
    x = tf.constant(blobs(8, (28, 28, 1)))
    bn = model.encoder.get_layer("enc0_bn")
    mean0 = bn.moving_mean.numpy().copy()
    one_by_one = np.concatenate([model.encode_latent(x[i:i + 1]).numpy() for i in range(4)])
    np.testing.assert_allclose(model.encode_latent(x[:4]).numpy(), one_by_one, atol=1e-5)  # inference: per image
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean0)  # inference leaves statistics alone
    model.compute_losses(x, training=True)
    assert not np.allclose(bn.moving_mean.numpy(), mean0)  # training updates them


def test_single_layer_cae_decays_only_the_encoder_kernel():
    model = get_architecture("single_layer_cae")((28, 28, 1), filters=4, l2_penalty=1e-2)
    x = tf.constant(blobs(2, (28, 28, 1)))
    kernel = model.encoder.get_layer("encode_conv").kernel
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), 1e-2 * float(tf.reduce_sum(tf.square(kernel))), rtol=1e-5)
    assert model.decoder.get_layer("decode_conv").kernel_regularizer is None
    losses = model.compute_losses(x)
    np.testing.assert_allclose(float(losses["loss"]), float(losses["mse_signed"] + losses["l2"]), rtol=1e-6)
    np.testing.assert_allclose(float(losses["mse_signed"]), 4 * float(losses["mse"]), rtol=1e-4)  # [-1,1] vs [0,1]
    assert model.latent_shape == (28, 28, 4)
    assert get_architecture("single_layer_cae")((28, 28, 1), l2_penalty=0.0).losses == []
