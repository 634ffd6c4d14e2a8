"""A residual block that starts as the identity, for adding capacity to a trained transform.

    x ─▶ x + gain · (W₂ ∗ relu(gain · (W₁ ∗ x + b₁)) + b₂)        (3×3 convolutions, `same` padding)

W₂ and b₂ start at zero, so a model that gains blocks computes exactly what it computed before, and
training decides how much each block adds (the warm-start rule of the codec's other options). `gain`
multiplies every variable where it is used: Adam moves a variable by about the learning rate a step,
so the block's weights move `gain` times faster than those of a transform converged at a low rate,
with the same initial function (W₁ starts at He-normal / gain).
"""

from __future__ import annotations

import keras
import tensorflow as tf


class ResidualBlock(keras.layers.Layer):
    """Identity at the start, `channels` in and out, `hidden` channels inside."""

    def __init__(self, channels: int, hidden: int | None = None, gain: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.hidden = int(hidden or channels)
        self.gain = float(gain)

    def build(self, input_shape) -> None:
        if int(input_shape[-1]) != self.channels:
            raise ValueError(f"{self.name}: built for {self.channels} channels, got {input_shape[-1]}")
        fan_in = 9 * self.channels
        self.kernel_0 = self.add_weight(
            name="kernel_0", shape=(3, 3, self.channels, self.hidden),
            initializer=keras.initializers.RandomNormal(stddev=(2.0 / fan_in) ** 0.5 / self.gain))
        self.bias_0 = self.add_weight(name="bias_0", shape=(self.hidden,), initializer="zeros")
        self.kernel_1 = self.add_weight(name="kernel_1", shape=(3, 3, self.hidden, self.channels),
                                        initializer="zeros")
        self.bias_1 = self.add_weight(name="bias_1", shape=(self.channels,), initializer="zeros")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        g = self.gain
        hidden = tf.nn.relu(tf.nn.conv2d(inputs, g * self.kernel_0, 1, "SAME") + g * self.bias_0)
        return inputs + tf.nn.conv2d(hidden, g * self.kernel_1, 1, "SAME") + g * self.bias_1

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "hidden": self.hidden, "gain": self.gain}
