"""Generalized divisive normalization (Ballé et al. 2016) and its inverse, as in TFC's GDN layer.

    GDN:  y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)        IGDN: y_i = x_i * sqrt(...)

The sum over channels is a 1×1 convolution, so the layer works for any spatial size. beta and gamma
must stay non-negative (beta strictly positive); like TFC's `NonnegativeParameterization` they are
stored as v with value = max(v, sqrt(min + pedestal))² − pedestal, which keeps them in range and gives
gradients that do not vanish near zero.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.layers.bound import lower_bound


class GDN(keras.layers.Layer):
    """GDN over the last axis of an NHWC tensor; `inverse=True` gives IGDN (used in synthesis)."""

    def __init__(self, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1,
                 reparam_offset: float = 2.0**-18, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inverse = bool(inverse)
        self.beta_min = float(beta_min)
        self.gamma_init = float(gamma_init)
        self.reparam_offset = float(reparam_offset)
        self._pedestal = self.reparam_offset**2
        self._beta_bound = (self.beta_min + self._pedestal) ** 0.5
        self._gamma_bound = self.reparam_offset

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        pedestal = self._pedestal
        beta0 = np.sqrt(np.ones(channels) + pedestal).astype(np.float32)
        gamma0 = np.sqrt(self.gamma_init * np.eye(channels) + pedestal).astype(np.float32)
        self.beta_param = self.add_weight(name="beta", shape=(channels,),
                                          initializer=keras.initializers.Constant(beta0))
        self.gamma_param = self.add_weight(name="gamma", shape=(channels, channels),
                                           initializer=keras.initializers.Constant(gamma0))

    @property
    def beta(self) -> tf.Tensor:
        return self._decode(self.beta_param, self._beta_bound, training=False)

    @property
    def gamma(self) -> tf.Tensor:
        return self._decode(self.gamma_param, self._gamma_bound, training=False)

    def _decode(self, param, bound: float, training: bool) -> tf.Tensor:
        value = lower_bound(tf.convert_to_tensor(param), bound, training=training)
        return tf.square(value) - self._pedestal

    def call(self, inputs, training=None):
        training = bool(training)
        beta = self._decode(self.beta_param, self._beta_bound, training)
        gamma = self._decode(self.gamma_param, self._gamma_bound, training)
        # norm_i = beta_i + sum_j gamma_ij x_j^2: a 1×1 conv with kernel[j, i] = gamma[i, j].
        kernel = tf.transpose(gamma)[None, None]
        norm = tf.nn.conv2d(tf.square(inputs), kernel, strides=1, padding="VALID") + beta
        return inputs * tf.sqrt(norm) if self.inverse else inputs * tf.math.rsqrt(norm)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "inverse": self.inverse, "beta_min": self.beta_min,
                "gamma_init": self.gamma_init, "reparam_offset": self.reparam_offset}
