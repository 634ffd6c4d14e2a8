"""Learned image codec: Ballé et al. 2018 hyperprior (scale, or Minnen et al. 2018 mean-scale).

    x ─g_a─▶ y ─h_a─▶ z ─Q─▶ ẑ ─h_s─▶ (σ, μ)          ŷ = Q(y − μ) + μ ─g_s─▶ x̂
              4× conv 5×5/2 + GDN        3 convs (stride 1, 2, 2)      mirror with IGDN

Training state (`call`, `compute_losses`): Q is additive uniform noise U(−½, ½) for the rates, while
g_s sees y rounded as the coder will round it, round(y − μ) + μ, with a straight-through gradient
(`synthesis_ste`, Minnen & Singh 2020's "mixed" quantisation: the decoder trains on what it will decode,
which noise alone does not give it). z's rate comes from
a learned factorized density (entropy bottleneck), y's from N(0, σ²) ⊛ U(−½, ½) of y − μ with σ
lower-bounded at 0.11. Loss = lmbda · 255² · MSE + bpp, MSE on pixels in [0, 1] (so lmbda is TFC's
and CompressAI's λ: MSE measured on 0..255 pixels; 0.01 ≈ mid rate, larger λ = higher quality/rate).
bpp = −Σ log2(likelihoods) / (batch · H · W).

Coding state (after `finalize`): z symbols are round(z − median) clipped to [−z_radius, z_radius]
and coded with frozen per-channel tables (`entropy_tables()["z"]`, tails folded into the edge bins);
y symbols are round(y − μ) clipped to [−255, 255] and coded with a zero-mean quantised Gaussian of
scale `scale_table[i]`, where i = `hyper_decode({"z"})["y"]` is the index of the smallest table scale
not below the predicted σ. μ is never transmitted: `encode` and `decode` both recompute it from ẑ.

Variable rate (Cui et al. 2021, "asymmetric gained" units): with `lmbdas` = [λ_1 … λ_L] the model learns
one gain vector g_l and one inverse gain g'_l (M values each) per level; y is scaled by g_l before
quantisation and ŷ by g'_l before synthesis, so a level picks the quantiser's step size per channel.
Training draws a level per image and weighs its distortion by that level's λ, so one set of
transforms learns every rate at the cost of one training. Coding takes a continuous `quality` per
image in [1, L]: quality l is level l exactly, and between two levels the log gains (and log λ) are
interpolated linearly, which lands on the rate–distortion curve rather than on the chord between the
levels (models_store/README.md, "Measurements behind the code"). Export writes ONE SavedModel whose encode/decode/reconstruct signatures take `quality` [B]
(`rate_spec()` goes into the card); `rate_level` (a saved variable, part of the fingerprint) is the
quality used where none is given (training-time evaluation, anomaly scores). A single-λ model has no
gains and no quality input.

Deterministic parameters (`integer_hyper`): with it, `finalize` also converts h_s into an integer network
(`training/layers/integer.py`; medians rounded to 1/16, activations calibrated on training crops), and
coding reads σ and μ from it: the scale indices, and hence the streams, are the same on every machine,
TensorFlow build and thread setting. Without it (versions up to 8) the indices come from float h_s and
can differ by one at a table boundary between configurations, which loses the stream.

Spatial sizes must be multiples of `size_multiple` = 64 (the service pads by edge replication and
crops back): y has stride 16 and z stride 64, and h_s must upsample z exactly onto y's grid.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from contract.card import LatentSpec
from training.entropy_models import (
    MEAN_EXPONENT,
    MEAN_LIMIT,
    SCALE_BOUND,
    SCALE_EXPONENT,
    Z_EXPONENT,
    FactorizedDensity,
    gaussian_likelihood,
    integer_scale_index,
    integer_scale_thresholds,
    scale_index,
    scale_table,
)
from training.layers.bound import lower_bound
from training.layers.gdn import GDN
from training.layers.integer import IntegerConvWeights, convert, relu_exponent, to_fixed
from training.models.base import Autoencoder
from training.models.rate_levels import RateLevels, rate_distortion
from training.models.registry import register

Y_SYMBOL_RANGE = 255  # y symbols are clipped to [−255, 255]
Z_TAIL_MASS = 1e-6  # finalize warns when the z support leaves out more than this per side


def _conv(filters: int, kernel: int, stride: int = 1, **kwargs) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", **kwargs)


def _deconv(filters: int, kernel: int, stride: int, **kwargs) -> layers.Conv2DTranspose:
    return layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same", **kwargs)


@register("codec")
class Codec(RateLevels, Autoencoder):
    """Hyperprior codec; see the module docstring for the training and coding states."""

    architecture = "codec"
    size_multiple = 64
    # Receptive fields: y sees ±30 px (four 5×5 stride-2 layers), z ±142 px (h_a adds ±7 y cells), a
    # mean from ẑ reaches ±112 px of ẑ (h_s); 192 px (three z cells) covers decoding and all but the
    # outermost, near-zero weights of encoding.
    tile_halo = 192

    def __init__(self, input_shape=(None, None, 3), num_filters: int = 64, latent_channels: int = 96,
                 lmbda: float = 0.01, lmbdas: list[float] | None = None, mean_scale: bool = True,
                 z_radius: int = 32, synthesis_ste: bool = True, integer_hyper: bool = False, **kwargs) -> None:
        super().__init__(tuple(input_shape), **kwargs)
        n, m, c = int(num_filters), int(latent_channels), int(input_shape[-1])
        self.num_filters, self.latent_channels = n, m
        self.lmbdas = sorted(float(v) for v in lmbdas) if lmbdas else [float(lmbda)]
        if min(self.lmbdas) <= 0:
            raise ValueError("every λ must be positive")
        self.lmbda = self.lmbdas[0]  # the λ of `rate_level` (see `set_rate_level`)
        self.mean_scale = bool(mean_scale)
        self.synthesis_ste = bool(synthesis_ste)
        self.integer_hyper = bool(integer_hyper)
        self.z_radius = int(z_radius)
        if self.z_radius < 1:
            raise ValueError("z_radius must be at least 1")

        self.g_a = keras.Sequential(
            [_conv(n, 5, 2), GDN(), _conv(n, 5, 2), GDN(), _conv(n, 5, 2), GDN(), _conv(m, 5, 2)],
            name="analysis")
        self.g_s = keras.Sequential(
            [_deconv(n, 5, 2), GDN(inverse=True), _deconv(n, 5, 2), GDN(inverse=True),
             _deconv(n, 5, 2), GDN(inverse=True), _deconv(c, 5, 2)],
            name="synthesis")
        self.h_a = keras.Sequential(
            [_conv(n, 3, 1, activation="relu"), _conv(n, 5, 2, activation="relu"), _conv(n, 5, 2, use_bias=False)],
            name="hyper_analysis")
        self.h_s = keras.Sequential(
            [_deconv(n, 5, 2, activation="relu"), _deconv(n, 5, 2, activation="relu"),
             _deconv(2 * m if self.mean_scale else m, 3, 1)],
            name="hyper_synthesis")
        self._build_rate_levels(m)
        self.z_density = FactorizedDensity(name="z_density")
        self.z_density.build((None, n))
        # Coding state, frozen by `finalize` and saved with the model.
        k = 2 * self.z_radius + 1
        self.z_medians = self.add_weight(name="z_medians", shape=(n,), initializer="zeros", trainable=False)
        self.z_table = self.add_weight(name="z_table", shape=(n, k),
                                       initializer=keras.initializers.Constant(1.0 / k), trainable=False)
        self._scales = tf.constant(scale_table(), tf.float32)
        self._int_hs: list[IntegerConvWeights] = []
        if self.integer_hyper:
            self.h_s.build((None, None, None, n))
            widths = [n] + [int(layer.filters) for layer in self.h_s.layers[:-1]]
            self._int_hs = [IntegerConvWeights(self, f"h_s_{i}", layer, w)
                            for i, (layer, w) in enumerate(zip(self.h_s.layers, widths))]
            self._scale_thresholds = tf.constant(integer_scale_thresholds(), tf.float64)
        self.finalize_stats: dict[str, float] = {}

    def get_config(self) -> dict:
        config = {**super().get_config(), "num_filters": self.num_filters, "latent_channels": self.latent_channels,
                  "lmbda": self.lmbda, "mean_scale": self.mean_scale, "z_radius": self.z_radius,
                  "synthesis_ste": self.synthesis_ste}
        if self.integer_hyper:
            config["integer_hyper"] = True
        if len(self.lmbdas) > 1:
            config |= {"lmbdas": self.lmbdas, "rate_level": int(self.rate_level.numpy()),
                       "coded_lmbda": self.lmbdas[int(self.rate_level.numpy())]}
        return config

    # ---- rate levels -----------------------------------------------------------------------------
    def adopt(self, source: Codec) -> None:
        """Take every weight of `source`, a trained codec with other λ levels and/or another number of
        latent channels (same `num_filters`), so training can go on from it (training/models/warm_start.py
        says how new levels and channels start)."""
        from training.models.warm_start import adopt_codec

        adopt_codec(self, source)

    # ---- transforms ------------------------------------------------------------------------------
    def _analysis(self, images: tf.Tensor, training: bool, gain: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(gained y, z)."""
        y = self.g_a(images, training=training) * gain
        z = self.h_a(y if self.mean_scale else tf.abs(y), training=training)
        return y, z

    def _synthesis(self, y_hat: tf.Tensor, training: bool, inv_gain: tf.Tensor) -> tf.Tensor:
        return self.g_s(y_hat * inv_gain, training=training)

    def _hyper(self, z_hat: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """(σ, μ) of y from ẑ; μ is 0 for the scale-only hyperprior."""
        params = self.h_s(z_hat, training=training)
        if self.mean_scale:
            raw_scale, mean = tf.split(params, 2, axis=-1)
        else:
            raw_scale, mean = params, tf.zeros_like(params)
        return lower_bound(raw_scale, SCALE_BOUND, training), mean

    def _coded_hyper(self, z_symbols: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(scale index, μ) of y from z symbols, as coding uses them: from the integer h_s when the model
        has one (exact everywhere), else from the float h_s."""
        if not self.integer_hyper:
            scale, mean = self._hyper(tf.cast(z_symbols, tf.float32) + self.z_medians, training=False)
            return scale_index(scale, self._scales), mean
        x = tf.cast(z_symbols, tf.float64) * 2.0**Z_EXPONENT + to_fixed(self.z_medians, Z_EXPONENT)
        for state in self._int_hs:
            x = state(x)
        if self.mean_scale:
            sigma, mean = tf.split(x, 2, axis=-1)
        else:
            sigma, mean = x, tf.zeros_like(x)
        return integer_scale_index(sigma, self._scale_thresholds), tf.cast(mean * 2.0**-MEAN_EXPONENT, tf.float32)

    def _convert_hyper(self, z_batches: list[tf.Tensor]) -> None:
        """Calibrate the float h_s on coded ẑ (`z_batches`: z symbols) and convert it to integers."""
        peaks = [0.0] * len(self.h_s.layers)
        for z_symbols in z_batches:
            x = tf.cast(z_symbols, tf.float32) + self.z_medians
            for i, layer in enumerate(self.h_s.layers):
                x = layer(x)
                peaks[i] = max(peaks[i], float(tf.reduce_max(tf.abs(x))))
        exponents = np.full(self.num_filters, float(Z_EXPONENT))
        bound = (self.z_radius + float(np.max(np.abs(self.z_medians.numpy())))) * 2.0**Z_EXPONENT + 1
        m = self.latent_channels
        for i, (layer, state) in enumerate(zip(self.h_s.layers, self._int_hs)):
            if i < len(self._int_hs) - 1:
                out_e = np.full(layer.filters, float(relu_exponent(peaks[i])))
                conv = convert(layer, exponents, bound, out_e)
            elif self.mean_scale:
                out_e = np.concatenate([np.full(m, float(SCALE_EXPONENT)), np.full(m, float(MEAN_EXPONENT))])
                low = np.concatenate([np.full(m, 0.0), np.full(m, -MEAN_LIMIT)])
                high = np.concatenate([np.full(m, 2.0**30), np.full(m, MEAN_LIMIT)])
                conv = convert(layer, exponents, bound, out_e, (low, high))
            else:
                out_e = np.full(m, float(SCALE_EXPONENT))
                conv = convert(layer, exponents, bound, out_e, (np.zeros(m), np.full(m, 2.0**30)))
            state.assign(conv)
            exponents, bound = out_e, float(np.max(np.abs(conv.clip_high)))

    def _z_symbols(self, z: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.round(z - self.z_medians), -self.z_radius, self.z_radius)

    @staticmethod
    def _y_symbols(y: tf.Tensor, mean: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.round(y - mean), -Y_SYMBOL_RANGE, Y_SYMBOL_RANGE)

    def _forward(self, images: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(x̂, likelihoods of y, likelihoods of z, λ per image): noisy when training, quantised as coded
        otherwise; training draws a random rate level per image, evaluation uses `rate_level`."""
        if training:
            positions = self._random_positions(images)
        else:
            positions = self._positions(None, images)
        gain, inv_gain = self._gains(positions)
        y, z = self._analysis(images, training, gain)
        if training:
            z_hat = z + tf.random.uniform(tf.shape(z), -0.5, 0.5)
        else:
            z_hat = self._z_symbols(z) + self.z_medians
        scale, mean = self._hyper(z_hat, training)
        if training:
            y_hat = y + tf.random.uniform(tf.shape(y), -0.5, 0.5)
            y_synth = y + tf.stop_gradient(tf.round(y - mean) + mean - y) if self.synthesis_ste else y_hat
        else:
            y_hat = y_synth = self._y_symbols(y, mean) + mean
        x_hat = self._synthesis(y_synth, training, inv_gain)
        y_likelihood = gaussian_likelihood(y_hat - mean, scale, training)
        z_likelihood = self.z_density.likelihood(z_hat, training)
        return x_hat, y_likelihood, z_likelihood, self._lmbda_at(positions)

    # ---- training state --------------------------------------------------------------------------
    def call(self, images, training=False):
        x_hat = self._forward(images, bool(training))[0]
        return x_hat if training else tf.clip_by_value(x_hat, 0.0, 1.0)

    def compute_losses(self, images, training=True):
        images = tf.convert_to_tensor(images, tf.float32)
        x_hat, y_likelihood, z_likelihood, lmbda = self._forward(images, bool(training))
        return rate_distortion(images, x_hat, [y_likelihood], z_likelihood, lmbda, bool(training))

    # ---- coding state ----------------------------------------------------------------------------
    def finalize(self, dataset: tf.data.Dataset | None = None, max_batches: int = 8) -> None:
        """Freeze the z tables from the learned density (medians by bisection on its CDF).

        `dataset` (optional, batches of images) only measures how often symbols hit the clipping
        range, reported in `finalize_stats`; the tables themselves come from the density alone.
        """
        c = self.image_shape[-1]
        if not self.built:
            self(tf.zeros([1, self.size_multiple, self.size_multiple, c]))
        quantiles = self.z_density.quantiles([Z_TAIL_MASS, 0.5, 1.0 - Z_TAIL_MASS])
        medians = quantiles[:, 1]
        if self.integer_hyper:  # exactly representable at 2^−Z_EXPONENT
            medians = np.round(medians * 2.0**Z_EXPONENT) / 2.0**Z_EXPONENT
        self.z_medians.assign(medians.astype(np.float32))
        self.z_table.assign(self.z_density.pmf_table(medians, self.z_radius).astype(np.float32))
        needed = float(np.max(np.maximum(medians - quantiles[:, 0], quantiles[:, 2] - medians)))
        self.finalize_stats = {"z_support_needed": needed, "z_radius": float(self.z_radius)}
        if self.integer_hyper:
            self._convert_hyper(self._calibration_z(dataset, max_batches))
        if dataset is not None:
            clipped_z = clipped_y = total_z = total_y = 0
            for batch in dataset.take(max_batches):
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                y, z = self._analysis(images, False, self._gains(self._positions(None, images))[0])
                _, mean = self._coded_hyper(self._z_symbols(z))
                clipped_z += int(tf.reduce_sum(tf.cast(tf.abs(tf.round(z - self.z_medians)) > self.z_radius, tf.int32)))
                clipped_y += int(tf.reduce_sum(tf.cast(tf.abs(tf.round(y - mean)) > Y_SYMBOL_RANGE, tf.int32)))
                total_z += int(tf.size(z))
                total_y += int(tf.size(y))
            self.finalize_stats["z_clipped_fraction"] = clipped_z / max(total_z, 1)
            self.finalize_stats["y_clipped_fraction"] = clipped_y / max(total_y, 1)
            if self.finalize_stats["z_clipped_fraction"] > 1e-3:
                warnings.warn(f"{self.finalize_stats['z_clipped_fraction']:.2%} of z symbols fall outside "
                              f"±{self.z_radius}; consider a larger z_radius", stacklevel=2)
        self.finalized = True

    def _calibration_z(self, dataset: tf.data.Dataset | None, max_batches: int) -> list[tf.Tensor]:
        """z symbols of calibration images at the lowest, default and highest levels (h_s sees them all)."""
        if dataset is None:
            return [tf.zeros([1, 2, 2, self.num_filters])]
        out, saved = [], int(self.rate_level.numpy())
        for batch in dataset.take(max_batches):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for level in sorted({0, saved, self.num_levels - 1}):
                gain = self._gains(tf.fill(tf.shape(images)[:1], float(level)))[0]
                out.append(self._z_symbols(self._analysis(images, False, gain)[1]))
        return out

    def latent_specs(self) -> list[LatentSpec]:
        return [
            LatentSpec(name="z", channels=self.num_filters, stride=64, coding="categorical",
                       min_symbol=-self.z_radius, max_symbol=self.z_radius),
            LatentSpec(name="y", channels=self.latent_channels, stride=16, coding="gaussian",
                       min_symbol=-Y_SYMBOL_RANGE, max_symbol=Y_SYMBOL_RANGE,
                       scale_table=[float(s) for s in scale_table()], scale_source="hyper_decode"),
        ]

    def entropy_tables(self) -> dict[str, tf.Tensor]:
        return {"z": tf.convert_to_tensor(self.z_table)}

    def encode(self, images: tf.Tensor, quality: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        y, z = self._analysis(images, False, self._gains(self._positions(quality, images))[0])
        z_symbols = self._z_symbols(z)
        _, mean = self._coded_hyper(z_symbols)
        return {"z": tf.cast(z_symbols, tf.int32), "y": tf.cast(self._y_symbols(y, mean), tf.int32)}

    def hyper_decode(self, latents: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {"y": self._coded_hyper(latents["z"])[0]}

    def decode(self, latents: dict[str, tf.Tensor], quality: tf.Tensor | None = None) -> tf.Tensor:
        _, mean = self._coded_hyper(latents["z"])
        y_hat = tf.cast(latents["y"], tf.float32) + mean
        inv_gain = self._gains(self._positions(quality, y_hat))[1]
        return tf.clip_by_value(self._synthesis(y_hat, False, inv_gain), 0.0, 1.0)

    def reconstruct(self, images: tf.Tensor, quality: tf.Tensor | None = None) -> tf.Tensor:
        return self.decode(self.encode(images, quality), quality)

    def coded_bits(self, latents: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Information content (bits, per image) of integer latents under the exact coding models.

        What an ideal coder would spend with the frozen z tables and the table-quantised y scales;
        the real range-coded payloads are this plus a few bytes of word overhead per latent.
        """
        z = tf.cast(latents["z"], tf.int32)
        table = self.z_table / tf.reduce_sum(self.z_table, axis=1, keepdims=True)
        index = tf.reshape(tf.transpose(z + self.z_radius, [3, 0, 1, 2]), [self.num_filters, -1])
        z_probs = tf.reshape(tf.gather(table, index, batch_dims=1), tf.shape(tf.transpose(z, [3, 0, 1, 2])))
        z_bits = -tf.reduce_sum(tf.math.log(z_probs), axis=[0, 2, 3]) / np.log(2.0)
        scales = tf.gather(self._scales, self.hyper_decode({"z": z})["y"])
        y_probs = gaussian_likelihood(tf.cast(latents["y"], tf.float32), scales)
        y_bits = -tf.reduce_sum(tf.math.log(y_probs), axis=[1, 2, 3]) / np.log(2.0)
        return {"z": z_bits, "y": y_bits}
