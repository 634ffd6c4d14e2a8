"""Variable rate by gain units (Cui et al. 2021): what `codec` and `codec_cc` share about their λ levels.

With `lmbdas` = [λ_1 … λ_L] a model learns one gain vector g_l and one inverse gain g'_l (M values each)
per level: y is scaled by g_l before quantisation and ŷ by g'_l before synthesis, so a level picks the
quantiser's step size per channel. Training draws a level per image; coding takes a continuous
`quality` in [1, L] whose fractional part interpolates the log gains (and log λ) of its two neighbours.
`rate_level` (a saved variable) is the level used where no quality is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from contract.card import RateSpec


def rate_distortion(images: tf.Tensor, x_hat: tf.Tensor, y_likelihoods: Sequence[tf.Tensor],
                    z_likelihood: tf.Tensor, lmbda: tf.Tensor, training: bool,
                    weights: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Loss = λ · 255² · MSE + bpp per image (λ per image: its level's), averaged (weighted by
    `weights` [B] when given: `RateLevels.level_weights`); bpp from the likelihoods of every part of y
    and of z over the image's pixels. Out of training, x̂ is clipped to [0, 1] first, as the service
    clips what it sends."""
    if not training:
        x_hat = tf.clip_by_value(x_hat, 0.0, 1.0)
    shape = tf.shape(images)
    pixels = tf.cast(shape[1] * shape[2], tf.float32) * np.log(2.0)  # per image, in nats → bits
    bits_y = tf.add_n([-tf.reduce_sum(tf.math.log(lik), axis=[1, 2, 3]) for lik in y_likelihoods]) / pixels
    bits_z = -tf.reduce_sum(tf.math.log(z_likelihood), axis=[1, 2, 3]) / pixels
    mse_each = tf.reduce_mean(tf.square(images - x_hat), axis=[1, 2, 3])
    per_image = lmbda * 255.0**2 * mse_each + bits_y + bits_z
    loss = tf.reduce_mean(per_image if weights is None else weights * per_image)
    bpp_y, bpp_z = tf.reduce_mean(bits_y), tf.reduce_mean(bits_z)
    mse = tf.reduce_mean(mse_each)
    psnr = -10.0 * tf.math.log(tf.maximum(mse, 1e-10)) / np.log(10.0)
    return {"loss": loss, "mse": mse, "bpp": bpp_y + bpp_z, "bpp_y": bpp_y, "bpp_z": bpp_z, "psnr": psnr}


class RateLevels:
    """Mixin for a keras.Model with `self.lmbdas` (sorted) and a latent of M channels."""

    lmbdas: list[float]
    lmbda: float

    def _build_rate_levels(self, channels: int) -> None:
        """Create the gains and `rate_level` (call where the weight order should put them).

        Gains are stored as logs so they stay positive, initialised to sqrt(λ_l / λ_ref): for MSE the
        best quantiser step shrinks roughly as 1/sqrt(λ), and the level nearest the geometric mean
        starts where a single-λ model at that λ would be (so `--init-from` such a model works). A
        single-rate model has no gains (one level's gain is a redundant rescaling)."""
        levels = len(self.lmbdas)
        self.log_gain = self.log_inv_gain = None
        if levels > 1:
            init = 0.5 * np.log(np.asarray(self.lmbdas) / np.exp(np.mean(np.log(self.lmbdas))))
            self.log_gain = self.add_weight(name="log_gain", shape=(levels, channels), initializer="zeros")
            self.log_inv_gain = self.add_weight(name="log_inv_gain", shape=(levels, channels), initializer="zeros")
            self.log_gain.assign(np.repeat(init[:, None], channels, axis=1).astype(np.float32))
            self.log_inv_gain.assign(-np.repeat(init[:, None], channels, axis=1).astype(np.float32))
        self.rate_level = self.add_weight(name="rate_level", shape=(), dtype="int32", initializer="zeros",
                                          trainable=False)
        self._lmbda_values = tf.constant(self.lmbdas, tf.float32)

    @property
    def num_levels(self) -> int:
        return len(self.lmbdas)

    def set_rate_level(self, level: int) -> None:
        """Choose the level the coding state (encode/decode/export) uses; 0 = lowest rate."""
        if not 0 <= level < self.num_levels:
            raise ValueError(f"rate level must be in [0, {self.num_levels - 1}], not {level}")
        self.rate_level.assign(level)
        self.lmbda = self.lmbdas[level]

    def rate_spec(self) -> RateSpec | None:
        """The card's quality range (None for a single-rate model, which takes no quality input)."""
        if self.num_levels < 2:
            return None
        return RateSpec(lmbdas=self.lmbdas, default_quality=float(int(self.rate_level.numpy()) + 1))

    def _positions(self, quality: tf.Tensor | None, like: tf.Tensor) -> tf.Tensor:
        """Per-image level positions [B] in [0, L − 1] (quality − 1), `rate_level` where none is given."""
        if quality is None:
            return tf.fill(tf.shape(like)[:1], tf.cast(tf.convert_to_tensor(self.rate_level), tf.float32))
        quality = tf.reshape(tf.cast(quality, tf.float32), [-1])
        return tf.clip_by_value(quality - 1.0, 0.0, float(self.num_levels - 1))

    def _random_positions(self, like: tf.Tensor) -> tf.Tensor:
        """A random level per image [B] (training)."""
        return tf.cast(tf.random.uniform(tf.shape(like)[:1], 0, self.num_levels, tf.int32), tf.float32)

    def _interpolated(self, table: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        """Rows of `table` [L, ...] at fractional positions [B], linear between neighbours; an integer
        position gives its row exactly ((1 − 0)·a + 0·b), so quality l codes as level l always did."""
        j = tf.minimum(tf.cast(tf.floor(positions), tf.int32), self.num_levels - 2)
        t = positions - tf.cast(j, tf.float32)
        t = tf.reshape(t, [-1] + [1] * (len(table.shape) - 1))
        return (1.0 - t) * tf.gather(table, j) + t * tf.gather(table, j + 1)

    def _gains(self, positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(gain, inverse gain) [B, 1, 1, M] at per-image level positions [B] (1 for a single-rate model)."""
        if self.log_gain is None:
            return tf.constant(1.0), tf.constant(1.0)
        gain = tf.exp(self._interpolated(self.log_gain, positions))[:, None, None, :]
        inv_gain = tf.exp(self._interpolated(self.log_inv_gain, positions))[:, None, None, :]
        return gain, inv_gain

    def level_weights(self, lmbda: tf.Tensor) -> tf.Tensor | None:
        """Training weights [B] of images coded at λ [B]: (λ / geometric mean of the ladder)^−α with
        α = `level_weight_exponent`; None when α is 0 (the plain mean of the losses).

        Why: an image's loss grows with its λ (on the ten-level ladder of codec v2, ~0.2 at the lowest
        level against ~9 at the top), so the top levels' gradients drive the shared transforms and the
        low rates get transforms tuned for 1.5 bpp. α = 0.5 brings the levels' shares within ~2× of
        each other. Per-level weights (gains) are unaffected: Adam's steps do not depend on a constant
        scale of a parameter's gradient."""
        alpha = float(getattr(self, "level_weight_exponent", 0.0))
        if alpha == 0.0 or self.num_levels < 2:
            return None
        centre = float(np.exp(np.mean(np.log(self.lmbdas))))
        return tf.pow(lmbda / centre, -alpha)

    def _lmbda_at(self, positions: tf.Tensor) -> tf.Tensor:
        """λ per image [B] at level positions (log-interpolated, as the gains are)."""
        if self.num_levels < 2:
            return tf.fill(tf.shape(positions), self._lmbda_values[0])
        return tf.exp(self._interpolated(tf.math.log(self._lmbda_values), positions))
