"""Integer layers: exact (the same integers as plain int64 arithmetic) and close to the float layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.layers.integer import ACT_BITS, convert, relu_exponent, to_fixed


def _reference(inputs: np.ndarray, conv) -> np.ndarray:
    """The integer layer in numpy int64 / Python integers: a second, independent implementation."""
    x = inputs.astype(np.int64)
    kernel = conv.kernel.astype(np.int64)
    k, s = kernel.shape[0], conv.stride
    b, h, w, _ = x.shape
    if conv.transpose:  # scatter each input pixel through the kernel ([k, k, out, in]), SAME cropping
        out_h, out_w = h * s, w * s
        pad = max(k - s, 0)
        full = np.zeros((b, (h - 1) * s + k, (w - 1) * s + k, kernel.shape[2]), np.int64)
        for i in range(h):
            for j in range(w):
                full[:, i * s:i * s + k, j * s:j * s + k, :] += np.einsum("bc,xyoc->bxyo", x[:, i, j, :], kernel)
        top, left = pad // 2, pad // 2
        acc = full[:, top:top + out_h, left:left + out_w, :]
    else:
        pad = k // 2
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        acc = np.zeros((b, h // s, w // s, kernel.shape[3]), np.int64)
        for dy in range(k):
            for dx in range(k):
                patch = padded[:, dy:dy + h:s, dx:dx + w:s, :][:, : h // s, : w // s]
                acc += np.einsum("bhwc,co->bhwo", patch, kernel[dy, dx])
    pre = np.round(-np.log2(conv.preshift)).astype(np.int64)
    acc = np.floor_divide(acc + (np.int64(1) << pre) // 2 * (pre > 0), np.int64(1) << pre)
    shift = np.round(-np.log2(conv.unshift)).astype(np.int64)
    total = acc * conv.multiplier.astype(np.int64) + conv.offset.astype(np.int64)
    out = np.floor_divide(total + (np.int64(1) << shift) // 2, np.int64(1) << shift)
    return np.clip(out, conv.clip_low.astype(np.int64), conv.clip_high.astype(np.int64))


@pytest.mark.parametrize("kind", ["conv", "deconv"])
def test_integer_layer_matches_int64_arithmetic_and_the_float_layer(kind: str) -> None:
    keras.utils.set_random_seed(3)
    layer = (keras.layers.Conv2D(6, 3, strides=1, padding="same", activation="relu") if kind == "conv"
             else keras.layers.Conv2DTranspose(6, 5, strides=2, padding="same", activation="relu"))
    rng = np.random.default_rng(0)
    real = rng.normal(size=(2, 8, 8, 5)).astype(np.float32) * 3
    float_out = layer(real).numpy()
    e_in = 8
    conv = convert(layer, np.full(5, float(e_in)), float(np.abs(np.round(real * 2**e_in)).max()),
                   np.full(6, float(relu_exponent(float_out.max()))))
    ints = to_fixed(real, e_in)
    out = conv(ints).numpy()
    assert np.array_equal(out, _reference(ints.numpy(), conv))  # exact, not close
    e_out = relu_exponent(float_out.max())
    assert out.max() <= 2**ACT_BITS - 1
    np.testing.assert_allclose(out * 2.0**-e_out, float_out, atol=2e-3 * float_out.max() + 2.0**-e_out)


def test_integer_layer_is_the_same_on_a_thread_and_with_other_batch_shapes() -> None:
    """Summation order changes with batch size and tiling; the integers must not."""
    keras.utils.set_random_seed(4)
    layer = keras.layers.Conv2D(16, 5, padding="same")
    rng = np.random.default_rng(1)
    real = rng.normal(size=(4, 16, 16, 32)).astype(np.float32)
    layer(real)
    conv = convert(layer, np.full(32, 10.0), float(np.abs(np.round(real * 2**10)).max()), np.full(16, 8.0))
    ints = to_fixed(real, 10)
    whole = conv(ints).numpy()
    one_by_one = np.concatenate([conv(ints[i:i + 1]).numpy() for i in range(4)])
    assert np.array_equal(whole, one_by_one)


def test_codec_with_an_integer_hyper_synthesis_codes_like_the_float_one() -> None:
    """`integer_hyper` (how natural version 9 re-exports version 8's weights): same indices and streams
    round trip; pictures within a small fraction of a level of the float hyper-synthesis."""
    from contract import entropy
    from training.evaluate import coder_from_keras
    from training.models.codec import Codec

    keras.utils.set_random_seed(0)
    images = tf.random.uniform([2, 64, 64, 3], seed=1)
    exact = Codec(num_filters=8, latent_channels=12, lmbdas=[0.001, 0.01], integer_hyper=True)
    exact(images[:1])
    plain = Codec(num_filters=8, latent_channels=12, lmbdas=[0.001, 0.01])
    plain(images[:1])
    for mine, other in zip(plain.weights, [w for w in exact.weights if "int_" not in w.path], strict=True):
        mine.assign(other)
    dataset = tf.data.Dataset.from_tensors(images)
    exact.finalize(dataset)
    plain.finalize(dataset)
    assert exact.get_config()["integer_hyper"] and "integer_hyper" not in plain.get_config()
    latents = exact.encode(images)
    agree = tf.reduce_mean(tf.cast(tf.equal(exact.hyper_decode(latents)["y"], plain.hyper_decode(latents)["y"]),
                                   tf.float32))
    assert float(agree) > 0.99
    assert float(tf.reduce_max(tf.abs(exact.reconstruct(images) - plain.reconstruct(images)))) < 0.01
    coder = coder_from_keras(exact, "n")
    one = {k: v.numpy()[0] for k, v in latents.items()}
    payloads = entropy.encode_latents(coder.specs, one, coder.tables, coder.scale_fn())
    decoded = entropy.decode_latents(coder.specs, payloads, coder.tables, coder.scale_fn())
    for name, value in one.items():
        assert np.array_equal(decoded[name][0], value)
