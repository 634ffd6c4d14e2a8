"""Integer networks (Ballé, Johnston & Minnen 2019) for entropy parameters that decode identically everywhere.

A hyperprior codec picks each element's coding distribution from numbers that a network computes. In
floating point those numbers differ in their last bits between machines, TensorFlow builds, oneDNN on or
off, thread counts and GPUs (summation order, fused multiply-adds, Winograd convolutions), and a last-bit
difference at a table boundary hands the decoder another distribution than the encoder used: the stream
is lost (CompressAI#279, tensorflow/compression#44). An integer network computes the same integers on
every machine, so encoder and decoder always agree.

How: a float Keras layer that was trained normally is converted after training (post-training
quantisation, which the paper's Figure 6 shows costs next to nothing for a hyper-synthesis):

    a_in  = integer activations, real value a_in · 2^−e_j per input channel j
    acc_c = Σ W[.., j, c] · a_in[.., j]                 (integer weights, ≤ `WEIGHT_BITS` bits)
    acc'  = ⌊acc_c · 2^−t_c + ½⌋   (only when acc_c could exceed 2^32: bits far below the output step)
    a_out = ⌊(acc' · M_c + B_c) · 2^−s_c + ½⌋, then clipped (ReLU: to [0, 2^ACT_BITS − 1])

with M_c, B_c integers that fold the weight scale, the bias and the output's fixed-point exponent e_out.
Every operation is on integers held in float64, and every intermediate stays below 2^52 by
construction (`bound` is checked at conversion), so each sum, product and rounding is exact: the
result cannot depend on the order of a summation, on fusion, or on the device. The convolution is
followed by a `round` so that a convolution algorithm with a tiny float error (an FFT one on a GPU)
still lands on the exact integer.

Only the layers that decide distributions need this; the synthesis transform stays in float32 (a
last-bit difference there moves a pixel by far less than one level).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

WEIGHT_BITS = 12  # signed integer weights, |W| ≤ 2^11 − 1
ACT_BITS = 14  # ReLU activations in [0, 2^14 − 1]
EXACT_LIMIT = 2.0**52  # every intermediate stays below this: float64 then holds it exactly
ACT_MARGIN = 2.0  # activations may exceed the largest calibrated value by this factor before clipping


@dataclass(frozen=True)
class IntegerConv:
    """One converted convolution (or transposed convolution): integer kernel, requantisation, clip.

    Requantisation per output channel c, all exact:
        acc'  = ⌊acc · 2^−t_c + ½⌋                       (drop bits far below the output's step)
        a_out = ⌊(acc' · M_c + B_c) · 2^−s_c + ½⌋, clipped to [low_c, high_c]
    """

    kernel: np.ndarray  # integers; Conv2D [k, k, in, out], Conv2DTranspose [k, k, out, in]
    preshift: np.ndarray  # [out] 2^−t_c
    multiplier: np.ndarray  # [out] integers M_c
    offset: np.ndarray  # [out] integers B_c
    unshift: np.ndarray  # [out] 2^−s_c
    clip_low: np.ndarray  # [out] integers
    clip_high: np.ndarray  # [out] integers
    stride: int
    transpose: bool

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        return integer_conv(inputs, tf.constant(self.kernel, tf.float64), self.preshift, self.multiplier,
                            self.offset, self.unshift, self.clip_low, self.clip_high, self.stride, self.transpose)


def integer_conv(inputs: tf.Tensor, kernel: tf.Tensor, preshift, multiplier, offset, unshift, low, high,
                 stride: int, transpose: bool) -> tf.Tensor:
    """Integer activations (float64 holding integers) [B, H, W, in] → [B, H', W', out], exactly."""
    f64 = lambda v: tf.cast(tf.convert_to_tensor(v), tf.float64)
    kernel = f64(kernel)
    if transpose:
        shape = tf.shape(inputs)
        out_shape = tf.stack([shape[0], shape[1] * stride, shape[2] * stride, tf.shape(kernel)[2]])
        acc = tf.nn.conv2d_transpose(inputs, kernel, out_shape, strides=stride, padding="SAME")
    else:
        acc = tf.nn.conv2d(inputs, kernel, strides=stride, padding="SAME")
    acc = tf.floor(tf.round(acc) * f64(preshift) + 0.5)
    out = tf.floor((acc * f64(multiplier) + f64(offset)) * f64(unshift) + 0.5)
    return tf.clip_by_value(out, f64(low), f64(high))


class IntegerConvWeights:
    """Non-trainable weights holding one converted layer (created with the model, filled by finalize),
    so they are checkpointed, exported once as variables and covered by the fingerprint."""

    def __init__(self, owner: keras.layers.Layer, name: str, layer: keras.layers.Layer, in_channels: int) -> None:
        transpose = isinstance(layer, keras.layers.Conv2DTranspose)
        k, out = int(layer.kernel_size[0]), int(layer.filters)
        shape = (k, k, out, in_channels) if transpose else (k, k, in_channels, out)
        add = lambda what, shape_, dtype: owner.add_weight(name=f"{name}_{what}", shape=shape_, dtype=dtype,
                                                           initializer="zeros", trainable=False)
        self.kernel = add("int_kernel", shape, "int16")  # |W| < 2^(WEIGHT_BITS − 1)
        self.preshift = add("int_preshift", (out,), "float64")
        self.multiplier = add("int_multiplier", (out,), "float64")
        self.offset = add("int_offset", (out,), "float64")
        self.unshift = add("int_unshift", (out,), "float64")
        self.low = add("int_low", (out,), "float64")
        self.high = add("int_high", (out,), "float64")
        self.stride, self.transpose = int(layer.strides[0]), transpose

    def assign(self, conv: IntegerConv) -> None:
        for name in ("preshift", "multiplier", "offset", "unshift"):
            getattr(self, name).assign(getattr(conv, name))
        self.kernel.assign(conv.kernel.astype(np.int16))
        self.low.assign(conv.clip_low)
        self.high.assign(conv.clip_high)

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        return integer_conv(inputs, self.kernel, self.preshift, self.multiplier, self.offset, self.unshift,
                            self.low, self.high, self.stride, self.transpose)


def relu_exponent(max_activation: float) -> int:
    """Fixed-point exponent for an output whose calibrated largest magnitude is `max_activation`: the
    largest e with ACT_MARGIN · max · 2^e ≤ 2^ACT_BITS − 1."""
    top = 2.0**ACT_BITS - 1
    return int(np.floor(np.log2(top / (ACT_MARGIN * max(float(max_activation), 1e-6)))))


ACC_BITS = 32  # accumulators are rounded to at most this many significant bits before requantisation
MULTIPLIER_BITS = 50  # acc' · M_c + B_c stays below 2^50


def convert(layer: keras.layers.Layer, in_exponents: np.ndarray, in_bounds: np.ndarray | float,
            out_exponents: np.ndarray, out_range: tuple[np.ndarray, np.ndarray] | None = None) -> IntegerConv:
    """Convert a trained Conv2D / Conv2DTranspose (activation "relu" or "linear", padding "same").

    `in_exponents` [in]: the fixed-point exponent of each input channel; `in_bounds` ([in] or one
    number): the largest |integer| each input may hold; `out_exponents` [out]: the exponent wanted for
    each output channel. ReLU layers clip to [0, 2^ACT_BITS − 1]; linear layers to `out_range`
    (integers) or ±2^(ACT_BITS + 3).
    """
    transpose = isinstance(layer, keras.layers.Conv2DTranspose)
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        raise TypeError(f"cannot convert {type(layer).__name__} to an integer layer")
    activation = keras.activations.serialize(layer.activation)
    activation = activation if isinstance(activation, str) else activation.get("config", {}).get("name", activation)
    if activation not in ("relu", "linear") or layer.padding != "same":
        raise ValueError(f"{layer.name}: only 'same'-padded relu/linear convolutions convert (got {activation}, "
                         f"{layer.padding})")
    # a layer computing with a scaled kernel (codec_cc's ScaledConv2D) converts what it computes with
    kernel = np.asarray((layer.effective_kernel() if hasattr(layer, "effective_kernel") else layer.kernel).numpy(),
                        np.float64)
    bias = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else np.zeros(layer.filters)
    standard = np.swapaxes(kernel, 2, 3) if transpose else kernel  # [k, k, in, out]
    n_in, n_out = standard.shape[2], standard.shape[3]
    in_exponents = np.asarray(in_exponents, np.float64)
    out_exponents = np.asarray(out_exponents, np.float64)
    in_bounds = np.broadcast_to(np.asarray(in_bounds, np.float64), (n_in,))
    if len(in_exponents) != n_in or len(out_exponents) != n_out:
        raise ValueError(f"{layer.name}: exponents do not match the kernel {kernel.shape}")
    # Real contribution of one input integer is w · 2^−e_j; quantise it per output channel.
    per_out = standard * (2.0 ** -in_exponents)[None, None, :, None]
    top = 2.0 ** (WEIGHT_BITS - 1) - 1
    step = np.maximum(np.abs(per_out).reshape(-1, n_out).max(axis=0), 1e-30) / top  # [out]
    weights = np.round(per_out / step)
    acc_bound = (np.abs(weights) * in_bounds[None, None, :, None]).reshape(-1, n_out).sum(axis=0) + 1.0
    pre_bits = np.maximum(0.0, np.ceil(np.log2(acc_bound)) - ACC_BITS)
    acc_bound = acc_bound * 2.0**-pre_bits + 1.0
    gain = step * 2.0**pre_bits * 2.0**out_exponents  # output integers per (pre-shifted) accumulator unit
    offsets_real = bias * 2.0**out_exponents
    worst = acc_bound * gain + np.abs(offsets_real) + 1.0
    shift = np.floor(np.log2(2.0**MULTIPLIER_BITS / worst))
    multiplier = np.round(gain * 2.0**shift)
    offset = np.round(offsets_real * 2.0**shift)
    bound = acc_bound * np.abs(multiplier) + np.abs(offset)
    if np.any(bound >= EXACT_LIMIT / 2):
        raise ValueError(f"{layer.name}: integer intermediates would reach {bound.max():.3g} ≥ 2^51")
    if np.any((np.abs(weights).reshape(-1, n_out).max(axis=0) > 0) & (np.abs(multiplier) < 2.0**12)):
        raise ValueError(f"{layer.name}: requantisation multipliers are too coarse")
    if transpose:
        weights = np.swapaxes(weights, 2, 3)
    if activation == "relu":
        low, high = np.zeros(n_out), np.full(n_out, 2.0**ACT_BITS - 1)
    elif out_range is not None:
        low, high = (np.asarray(v, np.float64) for v in out_range)
    else:
        low, high = np.full(n_out, -(2.0 ** (ACT_BITS + 3))), np.full(n_out, 2.0 ** (ACT_BITS + 3))
    return IntegerConv(weights, 2.0**-pre_bits, multiplier, offset, 2.0**-shift, low, high,
                       int(layer.strides[0]), transpose)


def to_fixed(values: tf.Tensor, exponent: float) -> tf.Tensor:
    """Real values → integers at 2^−exponent (float64). For inputs that are already exact (symbols)."""
    return tf.round(tf.cast(values, tf.float64) * 2.0**exponent)
