"""The learned codec: GDN, rate–distortion training, frozen tables, real bitstreams, export round trip.

A tiny model (N=8, M=12) trained for a few dozen steps on smooth random colour fields keeps this file
to well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from contract import entropy
from contract.card import ModelCard, Provenance
from training.export import export_model
from training.layers.gdn import GDN
from training.models.codec import Codec
from training.models.registry import get_architecture
from training.train import make_train_step

ROOT = Path(__file__).resolve().parents[2]
STEPS = 60


def smooth_fields(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Random colour fields: coarse uniform noise upsampled bicubically, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=(n, 4, 4, 3)).astype(np.float32)
    fine = tf.image.resize(coarse, (height, width), method="bicubic").numpy()
    return np.clip(fine, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    """(model, train images, eval losses before, eval losses after) of a tiny codec, finalized."""
    keras.utils.set_random_seed(0)
    model = Codec(num_filters=8, latent_channels=12, lmbda=0.01)
    images = smooth_fields(16, 64, 64, seed=0)
    model(images[:1])
    before = {k: float(v) for k, v in model.compute_losses(images, training=False).items()}
    optimizer = keras.optimizers.Adam(learning_rate=3e-3)

    step = make_train_step(model, optimizer)

    for i in range(STEPS):
        step(tf.constant(images[(i % 2) * 8:(i % 2) * 8 + 8]))
    after = {k: float(v) for k, v in model.compute_losses(images, training=False).items()}
    model.finalize(tf.data.Dataset.from_tensor_slices(images).batch(8))
    return model, images, before, after


# ---- GDN -----------------------------------------------------------------------------------------
def test_gdn_any_size_matches_closed_form_and_inverts():
    x = tf.random.stateless_normal([2, 5, 7, 4], seed=[1, 2])
    gdn, igdn = GDN(), GDN(inverse=True)
    y = gdn(x)
    assert y.shape == x.shape and igdn(x).shape == x.shape
    # Initialisation: beta = 1, gamma = 0.1·I, so each channel is normalised by itself only.
    np.testing.assert_allclose(y.numpy(), (x / tf.sqrt(1.0 + 0.1 * x * x)).numpy(), rtol=1e-5, atol=1e-6)
    # With gamma = 0 both reduce to a per-channel scale by 1/sqrt(beta) and sqrt(beta): exact inverses.
    beta = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    for layer in (gdn, igdn):
        layer.beta_param.assign(np.sqrt(beta + layer._pedestal))
        layer.gamma_param.assign(np.zeros((4, 4), np.float32))
    np.testing.assert_allclose(igdn(gdn(x)).numpy(), x.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gdn(x).numpy(), (x / np.sqrt(beta)).numpy(), rtol=1e-5, atol=1e-6)


def test_gdn_parameters_stay_nonnegative_under_training():
    x = tf.random.stateless_normal([4, 6, 6, 3], seed=[3, 4])
    gdn = GDN()
    gdn(x)
    optimizer = keras.optimizers.SGD(learning_rate=10.0)
    for _ in range(20):  # maximising the output drives beta and gamma down as hard as possible
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(tf.square(gdn(x, training=True)))
        grads = tape.gradient(loss, gdn.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, gdn.trainable_variables))
    assert float(tf.reduce_min(gdn.beta)) >= gdn.beta_min * 0.99
    assert float(tf.reduce_min(gdn.gamma)) >= 0.0
    assert np.all(np.isfinite(gdn(x).numpy()))


# ---- training ------------------------------------------------------------------------------------
def test_registered_with_config():
    assert get_architecture("codec") is Codec
    config = Codec(num_filters=8, latent_channels=12, lmbda=0.05).get_config()
    assert config["num_filters"] == 8 and config["latent_channels"] == 12 and config["lmbda"] == 0.05
    assert Codec.size_multiple == 64


def test_training_reduces_loss(trained):
    _, _, before, after = trained
    assert {"loss", "mse", "bpp"} <= set(after)
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert after["mse"] < before["mse"]
    assert 0.0 < after["bpp"] < 8.0


# ---- coding state --------------------------------------------------------------------------------
def test_specs_tables_and_symbols(trained):
    model, images, _, _ = trained
    assert model.finalized
    z_spec, y_spec = model.latent_specs()
    assert (z_spec.name, z_spec.coding, z_spec.channels, z_spec.stride) == ("z", "categorical", 8, 64)
    assert (y_spec.name, y_spec.coding, y_spec.channels, y_spec.stride) == ("y", "gaussian", 12, 16)
    assert y_spec.scale_source == "hyper_decode" and len(y_spec.scale_table) == 64
    assert np.all(np.diff(y_spec.scale_table) > 0) and y_spec.scale_table[0] == pytest.approx(0.11)
    table = model.entropy_tables()["z"].numpy()
    assert table.shape == (8, z_spec.max_symbol - z_spec.min_symbol + 1) and table.dtype == np.float32
    assert np.all(table > 0)
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-5)

    latents = model.encode(images[:2])
    assert latents["z"].dtype == tf.int32 and latents["z"].shape == (2, 1, 1, 8)
    assert latents["y"].dtype == tf.int32 and latents["y"].shape == (2, 4, 4, 12)
    for spec in (z_spec, y_spec):
        values = latents[spec.name].numpy()
        assert spec.min_symbol <= values.min() and values.max() <= spec.max_symbol
    index = model.hyper_decode({"z": latents["z"]})["y"]
    assert index.dtype == tf.int32 and index.shape == latents["y"].shape
    assert 0 <= int(tf.reduce_min(index)) and int(tf.reduce_max(index)) < 64
    recon = model.reconstruct(images[:2]).numpy()
    np.testing.assert_array_equal(recon, model.decode(latents).numpy())
    assert 0.0 <= recon.min() and recon.max() <= 1.0


def test_real_bitstream_matches_estimated_rate(trained):
    model, _, _, _ = trained
    image = smooth_fields(1, 256, 256, seed=7)
    latents = {k: v.numpy() for k, v in model.encode(image).items()}
    specs, tables = model.latent_specs(), {k: v.numpy() for k, v in model.entropy_tables().items()}

    def scale_fn(name, coded):
        return model.hyper_decode({"z": tf.constant(coded["z"])})[name].numpy()

    payloads = entropy.encode_latents(specs, {k: v[0] for k, v in latents.items()}, tables, scale_fn)
    decoded = entropy.decode_latents(specs, payloads, tables, scale_fn)
    for name, value in latents.items():
        np.testing.assert_array_equal(decoded[name], value)
    real_bits = {spec.name: 8 * len(payload) for spec, (_, payload) in zip(specs, payloads)}
    ideal_bits = {k: float(v[0]) for k, v in model.coded_bits(latents).items()}
    for name, bits in real_bits.items():  # the range coder adds at most a word or two per latent
        assert abs(bits - ideal_bits[name]) <= 0.02 * ideal_bits[name] + 64, (real_bits, ideal_bits)
    # The model's own (quantised-latent) rate estimate agrees with the real length as well.
    estimate = float(model.compute_losses(image, training=False)["bpp"]) * 256 * 256
    assert abs(sum(real_bits.values()) - estimate) <= 0.15 * estimate + 128, (real_bits, estimate)


# ---- export --------------------------------------------------------------------------------------
FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    from contract import entropy
    from contract.card import ModelCard

    version_dir, images_path = sys.argv[1], sys.argv[2]
    card = ModelCard.read(version_dir)
    loaded = tf.saved_model.load(version_dir)
    sig = loaded.signatures
    tables = {k: v.numpy() for k, v in sig["entropy_tables"]().items()}
    originals = np.load(images_path)
    n, h, w, _ = originals.shape
    m = card.input.size_multiple
    padded = np.pad(originals, [(0, 0), (0, -h % m), (0, -w % m), (0, 0)], mode="edge")
    latents = {k: v.numpy() for k, v in sig["encode"](images=tf.constant(padded)).items()}

    def scale_fn(name, coded):
        return sig["hyper_decode"](z=tf.constant(coded["z"]))[name].numpy()

    report = {"padded_shape": list(padded.shape), "bytes": [], "max_recon_diff": 0.0}
    for i in range(n):
        one = {k: v[i] for k, v in latents.items()}
        payloads = entropy.encode_latents(card.latents, one, tables, scale_fn)
        decoded = entropy.decode_latents(card.latents, payloads, tables, scale_fn)
        for name, value in one.items():
            assert np.array_equal(decoded[name][0], value), name
        image = sig["decode"](**{k: tf.constant(v) for k, v in decoded.items()})["images"].numpy()
        reference = sig["reconstruct"](images=tf.constant(padded[i:i + 1]))["images"].numpy()
        image, reference = image[:, :h, :w], reference[:, :h, :w]
        assert image.shape == (1, h, w, 3)
        report["max_recon_diff"] = max(report["max_recon_diff"], float(np.abs(image - reference).max()))
        report["bytes"].append(sum(len(p) for _, p in payloads))
    report["training_imported"] = any(k == "training" or k.startswith("training.") for k in sys.modules)
    print("REPORT " + json.dumps(report))
    """
)


def test_export_and_fresh_process_round_trip(trained, tmp_path):
    model, _, _, after = trained
    card = ModelCard(
        name="codec-test", version=1, architecture="codec", input=model.input_spec_card(),
        latents=model.latent_specs(), tables_sha256=model.fingerprint(), config=model.get_config(),
        training=Provenance(dataset="synthetic", command="pytest", steps=STEPS, seed=0),
        metrics={"bpp_estimate": after["bpp"]},
    )
    assert card.input.any_size and card.input.size_multiple == 64
    version_dir = export_model(model, card, tmp_path / "store")
    images = smooth_fields(2, 17, 33, seed=3)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(version_dir), str(tmp_path / "images.npy")],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert report["padded_shape"] == [2, 64, 64, 3]
    assert report["max_recon_diff"] <= 1e-5
    assert not report["training_imported"]
    assert all(b > 0 for b in report["bytes"])


def test_training_checkpoints_hold_every_weight(tmp_path) -> None:
    """Resuming restores the whole model, the z density included (it once lived in untracked lists)."""
    from training.models.codec import Codec

    model = Codec(num_filters=8, latent_channels=12, lmbdas=[0.005, 0.02])
    model(tf.zeros([1, 64, 64, 3]))
    for weight in model.weights:  # distinctive values everywhere
        weight.assign(weight + tf.cast(1, weight.dtype))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = Codec(num_filters=8, latent_channels=12, lmbdas=[0.005, 0.02])
    fresh(tf.zeros([1, 64, 64, 3]))
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    assert len(fresh.weights) == len(model.weights)
    for saved, restored in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)


def test_more_rate_levels_start_from_fewer() -> None:
    """A codec with new λ levels adopts a trained one: shared λ code exactly as before, new gains lie on
    the line through the neighbouring levels' (log λ)."""
    images = smooth_fields(2, 64, 64, seed=3)
    source = Codec(num_filters=8, latent_channels=12, lmbdas=[0.005, 0.02])
    source(images[:1])
    rng = np.random.default_rng(0)
    source.log_gain.assign(rng.normal(0, 0.5, (2, 12)).astype(np.float32))
    source.log_inv_gain.assign(rng.normal(0, 0.5, (2, 12)).astype(np.float32))
    target = Codec(num_filters=8, latent_channels=12, lmbdas=[0.0025, 0.005, 0.01, 0.02])
    target(images[:1])
    target.adopt(source)
    for ours, theirs in ((1, 0), (3, 1)):
        source.set_rate_level(theirs)
        target.set_rate_level(ours)
        np.testing.assert_array_equal(target(images).numpy(), source(images).numpy())
    gains = source.log_gain.numpy()
    np.testing.assert_allclose(target.log_gain.numpy()[2], (gains[0] + gains[1]) / 2, rtol=1e-5)
    np.testing.assert_allclose(target.log_gain.numpy()[0], 1.5 * gains[0] - 0.5 * gains[1], rtol=1e-5)  # half the span below
    with pytest.raises(ValueError, match="multi-rate"):
        Codec(num_filters=8, latent_channels=12).adopt(source)


def test_wider_latent_starts_silent() -> None:
    """A codec with more latent channels adopts a narrower trained one: at every level it codes the same
    symbols and pictures, its new channels are all symbol 0 and cost next to nothing, and the
    distortion's gradient reaches the new channels of g_a (so training can turn them on); narrowed
    back, it is the narrower one again."""
    images = tf.constant(smooth_fields(2, 64, 64, seed=5))
    source = Codec(num_filters=8, latent_channels=12, lmbdas=[0.005, 0.02])
    source(images[:1])
    rng = np.random.default_rng(1)
    for weight in source.trainable_weights:  # a "trained" codec: nothing at its initial value
        weight.assign(weight + rng.normal(0, 0.05, weight.shape).astype(np.float32))
    source.finalize()
    wide = Codec(num_filters=8, latent_channels=20, lmbdas=[0.005, 0.01, 0.02])
    wide(images[:1])
    wide.adopt(source)
    wide.finalize()
    for ours, theirs in ((0, 0), (2, 1)):
        source.set_rate_level(theirs)
        wide.set_rate_level(ours)
        narrow_codes, wide_codes = source.encode(images), wide.encode(images)
        np.testing.assert_array_equal(wide_codes["z"].numpy(), narrow_codes["z"].numpy())
        np.testing.assert_array_equal(wide_codes["y"].numpy()[..., :12], narrow_codes["y"].numpy())
        assert not np.any(wide_codes["y"].numpy()[..., 12:])
        # same sums plus exact zeros, in another order: equal to float rounding
        np.testing.assert_allclose(wide.decode(wide_codes).numpy(), source.decode(narrow_codes).numpy(), atol=1e-6)
        extra = wide.coded_bits(wide_codes)["y"] - source.coded_bits(narrow_codes)["y"]
        assert np.all(extra.numpy() < 0.01 * 8 * 4 * 4)  # < 0.01 bit per new symbol
    with tf.GradientTape() as tape:
        loss = wide.compute_losses(images, training=True)["loss"]
    kernel = wide.g_a.layers[-1].kernel
    grad = tape.gradient(loss, kernel).numpy()
    assert np.abs(grad[..., 12:]).sum() > 0
    # ... and narrowed back to the source's channels and levels it is the source again, exactly
    back = Codec(num_filters=8, latent_channels=12, lmbdas=[0.005, 0.02])
    back(images[:1])
    back.adopt(wide)
    back.finalize()
    for ours, theirs in zip(back.weights, source.weights, strict=True):
        if ours is not back.rate_level:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    with pytest.raises(ValueError, match="cannot adopt"):
        Codec(num_filters=4, latent_channels=12).adopt(wide)


@pytest.mark.parametrize("ste", [True, False])
def test_decoder_trains_on_rounded_latents(ste: bool, monkeypatch) -> None:
    """With `synthesis_ste` the synthesis sees round(y − μ) + μ in training, as it will when decoding,
    and the distortion's gradient still reaches the analysis transform."""
    keras.utils.set_random_seed(1)
    model = Codec(num_filters=8, latent_channels=12, synthesis_ste=ste)
    images = tf.constant(smooth_fields(2, 64, 64, seed=4))
    model(images[:1])
    seen = {}
    hyper, synthesis = model._hyper, model._synthesis
    monkeypatch.setattr(model, "_hyper", lambda *a, **k: seen.setdefault("hyper", hyper(*a, **k)))
    monkeypatch.setattr(model, "_synthesis", lambda y, *a, **k: synthesis(seen.setdefault("y", y), *a, **k))
    with tf.GradientTape() as tape:
        x_hat = model(images, training=True)
        distortion = tf.reduce_mean(tf.square(images - x_hat))
    offsets = (seen["y"] - seen["hyper"][1]).numpy()
    assert np.allclose(offsets, np.round(offsets), atol=1e-4) == ste
    grads = tape.gradient(distortion, model.g_a.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
