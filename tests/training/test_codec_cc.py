"""Codec v2 (`codec_cc`): channel-conditional slices, integer entropy parameters, real bitstreams.

A tiny model (N=16, M=24 in three slices) trained for a few steps keeps this under a minute.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from contract import entropy
from contract.card import ModelCard, Provenance
from service.inference import codec as service_codec
from service.inference import imaging
from service.inference.registry import ModelRegistry
from training.evaluate import coder_from_keras, coder_from_saved_model
from training.export import export_model
from training.layers import checkerboard
from training.models.codec import Codec
from training.models.codec_cc import ChannelCodec
from training.train import make_train_step

LEVELS = [0.002, 0.02, 0.2]
TINY = {"num_filters": 16, "latent_channels": 24, "hyper_channels": 16, "support_channels": 24, "slices": [4, 8, 12],
            "param_hidden": [16, 16], "lrp_hidden": 16, "lmbdas": LEVELS}


def textured(n: int, size: int, seed: int) -> np.ndarray:
    """Colour fields with edges and fine noise, float32 in [0, 1]: enough detail for every slice."""
    rng = np.random.default_rng(seed)
    coarse = tf.image.resize(rng.uniform(size=(n, 6, 6, 3)), (size, size), method="bicubic").numpy()
    y, x = np.mgrid[0:size, 0:size] / size
    stripes = 0.2 * np.sin(2 * np.pi * (7 * x + 3 * y))[None, :, :, None]
    return np.clip(coarse + stripes + 0.05 * rng.normal(size=(n, size, size, 3)), 0, 1).astype(np.float32)


def train_tiny(seed: int, **options) -> tuple[ChannelCodec, np.ndarray]:
    """The TINY model with `options`, 30 Adam steps on textured crops from `seed`, finalized at level 2."""
    keras.utils.set_random_seed(seed)
    model = ChannelCodec(**TINY, **options)
    images = textured(8, 64, seed=0)
    model(images[:1])
    step = make_train_step(model, keras.optimizers.Adam(3e-3))
    for i in range(30):
        step(tf.constant(images[(i % 2) * 4:(i % 2) * 4 + 4]))
    model.set_rate_level(1)
    model.finalize(tf.data.Dataset.from_tensor_slices(images).batch(4))
    return model, images


@pytest.fixture(scope="module", params=[{}, {"checkerboard": True},
                                        {"level_synthesis": True, "synthesis_residual": [1, 1, 0]}],
                ids=["slices", "checkerboard", "level_synthesis+residual"])
def trained(request) -> tuple[ChannelCodec, np.ndarray]:
    """Trained a little, finalized: the plain channel-conditional model, its checkerboard variant (whose
    context kernels move from their zero start within these steps) and its level-conditional synthesis
    with residual blocks (the main run's shape and its branch's: both options in one export)."""
    model, images = train_tiny(seed=0, **request.param)
    if model.checkerboard:
        assert min(float(tf.reduce_max(tf.abs(layer.kernel))) for layer in model.ctx_layers) > 0
    if model.level_synthesis:
        assert float(tf.reduce_max(tf.abs(model.synthesis_scale))) > 0
    for block in (b for stage in model.g_s_blocks for b in stage):
        assert float(tf.reduce_max(tf.abs(block.kernel_1))) > 0
    return model, images


def test_slices_must_cover_the_latent() -> None:
    with pytest.raises(ValueError, match="sum to latent_channels"):
        ChannelCodec(**{**TINY, "slices": [4, 8]})


def test_integer_parameters_stay_close_to_the_float_ones(trained) -> None:
    """The integer network replaces the trained float one: means within a few 2^−8, ideal bits within 1%."""
    model, images = trained
    gain = model._gains(model._positions(None, images))[0]
    y = model.g_a(images) * gain
    z_symbols = model._z_symbols(model.h_a(y))
    support = model._support(z_symbols + model.z_medians)
    int_support = model._int_support(z_symbols)
    np.testing.assert_allclose(int_support.numpy() * model._support_unit.numpy(), support.numpy(),
                               atol=0.01 * float(tf.reduce_max(tf.abs(support))))
    _, bars, _ = model._symbols_and_bars(y, z_symbols)
    for k in range(len(model.slices)):
        float_bars = [tf.cast(b / 256.0, tf.float32) for b in bars[:k]]
        mean, _ = model._params(k, support, float_bars)
        int_mean, _ = model._int_params(k, int_support, bars[:k])
        assert float(tf.reduce_max(tf.abs(mean - tf.cast(int_mean / 256.0, tf.float32)))) < 0.05
    latents = model.encode(images)
    ideal = sum(float(tf.reduce_sum(v)) for v in model.coded_bits(latents).values())
    estimate = float(model.compute_losses(images, training=False)["bpp"]) * images.shape[0] * 64 * 64
    # the checkerboard's second pass reads rounded anchors, which moves the integer and float parameters
    # apart a little more (1.5% on an AVX-512 CPU, e21b59d included; under 1% on AVX2)
    tolerance = 0.02 if model.checkerboard else 0.01
    assert abs(ideal - estimate) < tolerance * estimate + 64, (ideal, estimate)


def test_stages_give_the_indices_of_the_all_at_once_path(trained) -> None:
    model, images = trained
    latents = model.encode(images[:2])
    all_at_once = model.hyper_decode(latents)
    stages = model.parameter_stages()
    names = [name for k in range(3) for name in model.slice_names(k)]
    assert list(stages) == [f"params_{name}" for name in names]
    assert names == ([f"y{k}{h}" for k in range(3) for h in "ab"] if model.checkerboard else ["y0", "y1", "y2"])
    assert [spec.name for spec in model.latent_specs()] == ["z", *names]
    carried: dict[str, tf.Tensor] = {}
    for name in names:
        inputs, fn = stages[f"params_{name}"]
        feed = {spec.name: latents[spec.name] if spec.name in latents else carried[spec.name] for spec in inputs}
        out = fn(feed)
        assert out[name].shape == latents[name].shape
        np.testing.assert_array_equal(out[name].numpy(), all_at_once[name].numpy())
        carried |= {key: value for key, value in out.items() if key != name}


def test_real_streams_round_trip_and_match_the_ideal_length(trained) -> None:
    model, _ = trained
    coder = coder_from_keras(model, "natural")
    image = textured(1, 128, seed=5)
    latents = {k: v.numpy() for k, v in model.encode(image).items()}
    one = {k: v[0] for k, v in latents.items()}
    payloads = entropy.encode_latents(coder.specs, one, coder.tables, coder.scale_fn())
    decoded = entropy.decode_latents(coder.specs, payloads, coder.tables, coder.scale_fn())
    for name, value in one.items():
        np.testing.assert_array_equal(decoded[name][0], value)
    real = sum(8 * len(p) for _, p in payloads)
    ideal = sum(float(v[0]) for v in model.coded_bits({k: tf.constant(v) for k, v in latents.items()}).values())
    assert abs(real - ideal) <= 0.02 * ideal + 32 * 4 * len(payloads), (real, ideal)
    np.testing.assert_array_equal(model.decode({k: tf.constant(v) for k, v in decoded.items()}).numpy(),
                                  model.decode({k: tf.constant(v) for k, v in latents.items()}).numpy())


def test_quality_moves_the_rate(trained) -> None:
    model, _ = trained
    image = tf.constant(textured(1, 64, seed=9))
    bits = [sum(float(v[0]) for v in model.coded_bits(model.encode(image, tf.constant([q]))).values())
            for q in (1.0, 2.0, 3.0)]
    assert bits[0] < bits[1] < bits[2], bits


def test_export_loads_in_the_service_and_round_trips(trained, tmp_path: Path) -> None:
    model, _ = trained
    card = ModelCard(
        name="cc", version=1, architecture="codec_cc", config=model.get_config(), input=model.input_spec_card(),
        latents=model.latent_specs(), tables_sha256=model.fingerprint(), rate=model.rate_spec(),
        training=Provenance(dataset="synthetic", command="tests", steps=30))
    version_dir = export_model(model, card, tmp_path)
    saved = coder_from_saved_model(version_dir, quality=2.5)
    assert list(saved.stage_inputs) == model.stage_names()

    async def serve() -> tuple[float, float]:
        registry = ModelRegistry(tmp_path)
        report = await registry.refresh()
        assert not report.failed, report  # includes the golden round trip
        loaded = registry.resolve("cc")
        source = imaging.SourceImage(pixels=textured(1, 80, seed=11)[0], channels=3, format="png")
        encoded = await service_codec.encode(loaded, source, quality=2.5)
        pixels, _ = await service_codec.decode(loaded, service_codec.parse(encoded.stream), max_pixels=1 << 20)
        direct = await service_codec.reconstruct(loaded, source, quality=2.5)
        await registry.close()
        return encoded.bpp, float(np.abs(pixels - direct.pixels).max())

    bpp, diff = asyncio.run(serve())
    assert bpp > 0 and diff < 1e-5


def test_adopting_a_codec_keeps_its_pictures() -> None:
    """Warm start from a trained hyperprior codec: widened transforms compute the source's y and x̂."""
    keras.utils.set_random_seed(2)
    source = Codec(num_filters=8, latent_channels=24, lmbdas=[0.001, 0.01])
    images = textured(2, 64, seed=3)
    source(images[:1])
    model = ChannelCodec(**{**TINY, "num_filters": 16, "hyper_channels": 8})
    model(images[:1])
    model.adopt(source)
    y_source = source.g_a(images)
    np.testing.assert_allclose(model.g_a(images).numpy(), y_source.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.g_s(y_source).numpy(), source.g_s(y_source).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="cannot adopt"):
        ChannelCodec(**TINY).adopt(source)  # z channels differ


def test_level_weights_rebalance_the_training_loss_only() -> None:
    """With α > 0 each image's loss is weighted by (λ / geometric mean)^−α: the training loss is that
    weighted mean of the per-image losses, the evaluation loss stays the plain one, and α = 0 (the
    default) leaves the loss and the card's config as before."""
    keras.utils.set_random_seed(1)
    plain = ChannelCodec(**TINY)
    weighted = ChannelCodec(**TINY, level_weight_exponent=0.5)
    images = textured(3, 64, seed=2)
    plain(images[:1])
    weighted(images[:1])
    weighted.set_weights(plain.get_weights())
    assert plain.level_weights(tf.constant(LEVELS)) is None
    assert "level_weight_exponent" not in plain.get_config()
    assert weighted.get_config()["level_weight_exponent"] == 0.5
    weights = weighted.level_weights(tf.constant(LEVELS)).numpy()
    np.testing.assert_allclose(weights, np.sqrt([10.0, 1.0, 0.1]), rtol=1e-5)  # λ 0.002, 0.02, 0.2

    # the same images, noise and levels through both: the weighted loss is the weighted mean
    positions = tf.constant([0.0, 1.0, 2.0])
    for model in (plain, weighted):
        model._random_positions = lambda like, p=positions: p
    losses = {}
    for name, model in (("plain", plain), ("weighted", weighted)):
        tf.random.set_seed(7)
        x_hat, y_lik, z_lik, lmbda = model._forward(tf.constant(images), training=True)
        per_image = (lmbda * 255.0**2 * tf.reduce_mean(tf.square(images - x_hat), axis=[1, 2, 3])
                     + tf.add_n([-tf.reduce_sum(tf.math.log(v), axis=[1, 2, 3]) for v in y_lik]) / (64 * 64 * np.log(2.0))
                     - tf.reduce_sum(tf.math.log(z_lik), axis=[1, 2, 3]) / (64 * 64 * np.log(2.0)))
        tf.random.set_seed(7)
        losses[name] = (float(model.compute_losses(images, training=True)["loss"]), per_image.numpy())
    assert losses["plain"][0] == pytest.approx(losses["plain"][1].mean(), rel=1e-4)
    assert losses["weighted"][0] == pytest.approx((weights * losses["weighted"][1]).mean(), rel=1e-4)
    assert losses["weighted"][0] != pytest.approx(losses["plain"][0], rel=1e-2)
    evaluation = [float(m.compute_losses(images, training=False)["loss"]) for m in (plain, weighted)]
    assert evaluation[0] == pytest.approx(evaluation[1], rel=1e-6)


def _checkerboard_twin(images: np.ndarray) -> tuple[ChannelCodec, ChannelCodec]:
    """A plain model and a checkerboard one holding the plain one's weights (its context kernels at
    their zero start)."""
    keras.utils.set_random_seed(4)
    plain, board = ChannelCodec(**TINY), ChannelCodec(**TINY, checkerboard=True)
    plain(images[:1])
    board(images[:1])
    weights = board.named_weights()
    for name, weight in plain.named_weights().items():
        weights[name].assign(weight)
    assert sorted(set(weights) - set(plain.named_weights())) == ["ctx0.0.kernel", "ctx1.0.kernel", "ctx2.0.kernel"]
    return plain, board


def test_checkerboard_starts_as_the_model_it_warm_starts_from() -> None:
    """Zero context kernels: the same pictures and rates as without the context, in both modes."""
    images = textured(2, 64, seed=5)
    plain, board = _checkerboard_twin(images)
    assert board.get_config()["checkerboard"] is True and "checkerboard" not in plain.get_config()
    for training in (False, True):
        tf.random.set_seed(3)
        a = plain.compute_losses(images, training=training)
        tf.random.set_seed(3)
        b = board.compute_losses(images, training=training)
        for key in ("loss", "bpp", "mse"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5), (key, training)


def test_checkerboard_parameters_read_only_what_the_decoder_has() -> None:
    """Anchors' (μ, σ) never depend on their own slice; the others' depend on that slice's anchors only,
    and (once the context kernels are non-zero) they do depend on them."""
    images = textured(1, 128, seed=6)
    _, board = _checkerboard_twin(images)
    for layer in board.ctx_layers:
        layer.kernel.assign(tf.random.normal(layer.kernel.shape, stddev=0.3, seed=1))
    y_k = board.g_a(images)[..., :4] * 3.0  # slice 0's width; scaled so that rounding matters
    support = tf.random.normal([1, 8, 8, TINY["support_channels"]], seed=2)
    mean, raw = board._params(0, support, [])
    anchors = checkerboard.anchor_mask(y_k).numpy()[0, :, :, 0].astype(bool)
    base = [t.numpy() for t in board._checkerboard_params(0, y_k, mean, raw, support, [])]

    def moved(i: int, j: int) -> list[np.ndarray]:
        delta = np.zeros(y_k.shape, np.float32)
        delta[0, i, j, :] = 5.0
        out = board._checkerboard_params(0, y_k + delta, mean, raw, support, [])
        return [np.abs(t.numpy() - b)[0].max(axis=-1) for t, b in zip(out, base)]

    # a non-anchor value moves nothing (not even its own parameters: the anchor pass gave them their input)
    assert max(float(d.max()) for d in moved(3, 4)) == 0.0
    # an anchor value moves non-anchors near it, and no anchor
    changes = moved(4, 4)
    for change in changes:
        assert float(change[anchors].max()) == 0.0
    assert float(changes[0][~anchors].max()) > 0.0


def test_scaled_conv_computes_with_gain_times_its_weight() -> None:
    """The context kernels' learning-rate multiplier: one plain SGD step moves the effective kernel
    gain² times as far as a plain Conv2D's (gain in the forward pass, gain in the gradient)."""
    from training.models.codec_cc import ScaledConv2D

    x = tf.random.normal([1, 6, 6, 2], seed=3)
    scaled = ScaledConv2D(3, 3, gain=4.0, padding="same", use_bias=False)
    plain = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)
    scaled.build(x.shape)
    plain.build(x.shape)
    plain.kernel.assign(scaled.kernel * 4.0)
    np.testing.assert_allclose(scaled(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)
    moves = []
    for layer, effective in ((scaled, scaled.effective_kernel), (plain, lambda: plain.kernel)):
        before = effective().numpy()
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) ** 2)
        layer.kernel.assign_sub(1e-3 * tape.gradient(loss, layer.kernel))
        moves.append(np.abs(effective().numpy() - before).sum())
    assert moves[0] == pytest.approx(16.0 * moves[1], rel=1e-3)


def took_weights_of(source: ChannelCodec, target: ChannelCodec) -> dict:
    """`target` (a superset shape) takes every weight of `source` by name; its named weights."""
    weights = target.named_weights()
    for name, weight in source.named_weights().items():
        weights[name].assign(weight)
    return weights


def assert_same_losses(a: ChannelCodec, b: ChannelCodec, images: np.ndarray) -> None:
    """The same loss from both models, in the coding state and in training (same noise)."""
    for training in (False, True):
        tf.random.set_seed(3)
        first = a.compute_losses(images, training=training)
        tf.random.set_seed(3)
        second = b.compute_losses(images, training=training)
        assert float(second["loss"]) == pytest.approx(float(first["loss"]), rel=1e-5)


def test_level_synthesis_starts_as_its_source_and_conditions_each_level_alone() -> None:
    """Zero tables: the plain model's pictures and rates. A table row of one level changes that level's
    pictures only (integer qualities are their rows exactly), and a quality between two levels gets a
    picture between theirs; the rates never move (the synthesis does not code)."""
    images = textured(1, 64, seed=8)
    keras.utils.set_random_seed(5)
    plain, conditional = ChannelCodec(**TINY), ChannelCodec(**TINY, level_synthesis=True)
    plain(images)
    conditional(images)
    weights = took_weights_of(plain, conditional)
    assert sorted(set(weights) - set(plain.named_weights())) == ["synthesis_scale", "synthesis_shift"]
    assert conditional.get_config()["level_synthesis"] is True
    assert_same_losses(plain, conditional, images)

    table = np.zeros(conditional.synthesis_scale.shape, np.float32)
    table[:, 2] = 0.05  # the top level's channel scales only
    conditional.synthesis_scale.assign(table)
    def picture(model, quality):
        model.rate_level.assign(0)
        return model.reconstruct(tf.constant(images), tf.constant([quality])).numpy()
    np.testing.assert_allclose(picture(conditional, 1.0), picture(plain, 1.0), atol=1e-6)
    top, top_plain = picture(conditional, 3.0), picture(plain, 3.0)
    assert np.abs(top - top_plain).max() > 1e-3
    middle = picture(conditional, 2.5) - picture(plain, 2.5)
    assert 0 < np.abs(middle).max() < np.abs(top - top_plain).max()
    assert conditional.coded_bits(conditional.encode(tf.constant(images), tf.constant([3.0])))["y2"].numpy() == \
        pytest.approx(plain.coded_bits(plain.encode(tf.constant(images), tf.constant([3.0])))["y2"].numpy())


def test_synthesis_residual_starts_as_its_source_and_then_adds_to_the_picture() -> None:
    """Blocks that start as the identity: the model without them computes the same losses from the same
    weights; training moves them (their gradient is not zero), a moved block changes the pictures but
    not the rates (the synthesis does not code), and the subpixel path of decoding agrees with training's."""
    images = textured(1, 64, seed=9)
    keras.utils.set_random_seed(6)
    shape = {"level_synthesis": True}
    plain, residual = ChannelCodec(**TINY, **shape), ChannelCodec(**TINY, **shape, synthesis_residual=[1, 2, 0])
    plain(images)
    residual(images)
    weights = took_weights_of(plain, residual)
    added = sorted(set(weights) - set(plain.named_weights()))
    assert added == sorted(f"g_s_res{i}.{b}.{w}_{j}" for i, b in ((0, 0), (1, 0), (1, 1))
                           for w in ("bias", "kernel") for j in (0, 1))
    assert residual.get_config()["synthesis_residual"] == [1, 2, 0]
    assert "synthesis_residual" not in plain.get_config()
    assert_same_losses(plain, residual, images)

    with tf.GradientTape() as tape:
        loss = residual.compute_losses(images, training=True)["loss"]
    last = residual.g_s_blocks[1][1].kernel_1
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, last)))) > 0

    last.assign(tf.random.normal(last.shape, stddev=0.01))
    quality = tf.constant([2.0])
    positions = residual._positions(quality, tf.constant(images))
    latent = tf.random.normal((1, 4, 4, TINY["latent_channels"]))
    moved = residual._synthesis(latent, positions, False).numpy()
    assert np.abs(moved - plain._synthesis(latent, positions, False).numpy()).max() > 1e-3
    np.testing.assert_allclose(residual._synthesis(latent, positions, False, subpixel=True).numpy(), moved, atol=1e-5)
    assert residual.coded_bits(residual.encode(tf.constant(images), quality))["y2"].numpy() == \
        pytest.approx(plain.coded_bits(plain.encode(tf.constant(images), quality))["y2"].numpy())
    with pytest.raises(ValueError, match="three block counts"):
        ChannelCodec(**TINY, synthesis_residual=[1, 1])
