"""Transposed convolutions run as one convolution + depth_to_space: the same function, ~2× faster on CPU.

A stride-s transposed convolution with a k×k kernel computes each of the s×s output phases from a
small neighbourhood of the input: output pixel s·a + r gets tap t = r + pad − s·j from input a + j.
So it equals a stride-1 convolution whose kernel holds, for every phase, the taps that phase uses
(zeros elsewhere), followed by depth_to_space. TensorFlow's CPU transposed convolution (a gradient
kernel) runs at well under half the speed of a forward convolution of the same size (models_store/
README.md, "Measurements behind the code"), and the synthesis transform of a codec is made of them. Training keeps the Keras layers; the coding state (decode,
reconstruct) uses this. The kernel is rearranged with gathers inside the graph, so an exported model
stores each weight once.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _tap_index(k: int, s: int, pad: int, reach: int) -> np.ndarray:
    """[s, 2·reach + 1] kernel tap used by output phase r from input offset j (k where none: a zero tap)."""
    index = np.full((s, 2 * reach + 1), k, np.int32)
    for r in range(s):
        for j in range(-reach, reach + 1):
            t = r + pad - s * j
            if 0 <= t < k:
                index[r, j + reach] = t
    return index


def subpixel_deconv(layer: keras.layers.Conv2DTranspose, inputs: tf.Tensor) -> tf.Tensor:
    """`layer(inputs)` for a 'same'-padded Conv2DTranspose, computed as conv2d + depth_to_space."""
    k, s = int(layer.kernel_size[0]), int(layer.strides[0])
    if layer.padding != "same" or layer.kernel_size[0] != layer.kernel_size[1] or layer.strides[0] != layer.strides[1]:
        raise ValueError(f"{layer.name}: only square, 'same'-padded transposed convolutions are rewritten")
    if s == 1:
        return layer(inputs)
    pad = max(k - s, 0) // 2
    reach = max(abs((r + pad - t) // s) for r in range(s) for t in range(k) if (r + pad - t) % s == 0)
    index = _tap_index(k, s, pad, reach)
    kernel = tf.transpose(tf.convert_to_tensor(layer.kernel), [0, 1, 3, 2])  # [k, k, in, out]
    kernel = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])  # tap k is zero
    rows = tf.gather(kernel, index, axis=0)  # [s(ry), J(jy), k+1, in, out]
    taps = tf.gather(rows, index, axis=2)  # [s(ry), J(jy), s(rx), J(jx), in, out]
    taps = tf.transpose(taps, [1, 3, 4, 0, 2, 5])  # [jy, jx, in, ry, rx, out]
    width = 2 * reach + 1
    n_in, n_out = int(kernel.shape[2]), int(layer.filters)
    conv_kernel = tf.reshape(taps, [width, width, n_in, s * s * n_out])
    out = tf.nn.conv2d(inputs, conv_kernel, strides=1, padding="SAME")
    if layer.use_bias:
        out = out + tf.tile(tf.convert_to_tensor(layer.bias), [s * s])
    out = tf.nn.depth_to_space(out, s)
    return layer.activation(out)


def run_sequential(model: keras.Sequential, inputs: tf.Tensor) -> tf.Tensor:
    """A Sequential's forward pass (inference) with every transposed convolution rewritten."""
    x = inputs
    for layer in model.layers:
        x = subpixel_deconv(layer, x) if isinstance(layer, keras.layers.Conv2DTranspose) else layer(x, training=False)
    return x
