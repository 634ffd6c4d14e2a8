"""Codec v2: channel-conditional entropy model (Minnen & Singh 2020) with integer entropy parameters.

    x ─g_a─▶ y ─h_a─▶ z ─Q─▶ ẑ ─h_s─▶ support
    y = [y_0 | y_1 | … | y_{S−1}]   (uneven channel slices, ELIC-style: small ones first)
    slice k: (μ_k, σ_k) = P_k(support, ȳ_0 … ȳ_{k−1});  ȳ_k = round(y_k − μ_k) + μ_k
             ŷ_k = ȳ_k + ½·tanh(R_k(support, ȳ_0 … ȳ_k))           (latent residual prediction)
    x̂ = g_s(ŷ · inverse gain)

Each slice is coded with a quantised Gaussian N(μ_k, σ_k²) whose parameters depend on the slices decoded
before it, so later slices cost fewer bits than a hyperprior alone gives them. g_a/g_s are the GDN
transforms of `codec.py`; rates, gains (Cui et al.'s gain units, one continuous quality) and the mixed
quantisation (noise for rates, rounding with a straight-through gradient for the synthesis and for the
conditioning) are trained as there.

Deterministic coding. Everything that decides a distribution — h_s, every P_k and the ȳ they read —
runs as an *integer network* after `finalize` (`training/layers/integer.py`): ẑ and ȳ are fixed-point
integers (ẑ at 2^−4, ȳ = symbol · 2^8 + μ_int at 2^−8), P_k's outputs are μ_int at 2^−8 and σ_int at
2^−10, and a scale index is the count of integer table thresholds below σ_int. So the encoder and the
decoder compute the same indices and the same means on any machine, TensorFlow build or device. The
residual predictors R_k and g_s stay in float32: they only move pixels, never a distribution. Training
is all float; `finalize` calibrates activation ranges on training crops and converts.

Coding-state entry points, exported as signatures by `training/export.py`:
`encode` (images → z, y_0 … y_{S−1}), `decode` (symbols → images), and one `params_y<k>` stage per
slice: stage 0 takes z and returns the scale indices of y_0 with the integer `support` and `mean_y0`;
stage k takes `support`, y_0 … y_{k−1} and mean_y0 … mean_y{k−1} and returns y_k's indices and
`mean_y<k>`. The service runs the stages in card order and carries their extra outputs forward, so
each stage computes one slice's parameters once.

Sizes: y stride 16, z stride 64 (multiples of `size_multiple` = 64, padded by the service).

Two options start at zero on a warm start (so the model computes what its source did) and are measured
as branches of the run (models_store/README.md): `checkerboard` (a spatial context within each slice,
each slice then coded as two latents, its anchors `y<k>a` and the rest `y<k>b`, with `params_y<k>a/b`
stages), `level_synthesis` (per-level channel scales and shifts inside g_s) and `synthesis_residual`
(residual blocks after g_s's inverse GDNs: capacity where the top qualities are short of it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from contract.card import EffortSpec, LatentSpec
from training.entropy_models import (
    MEAN_EXPONENT,
    SCALE_BOUND,
    Z_EXPONENT,
    FactorizedDensity,
    gaussian_likelihood,
    integer_scale_index,
    integer_scale_thresholds,
    scale_table,
)
from training.layers import checkerboard as board
from training.layers.bound import lower_bound
from training.layers.gdn import GDN
from training.layers.integer import IntegerConvWeights, to_fixed
from training.layers.residual import ResidualBlock
from training.layers.subpixel import run_sequential, subpixel_deconv
from training.models import refinement
from training.models.base import Autoencoder
from training.models.codec import _conv, _deconv
from training.models.codec_cc_integer import convert_entropy_networks
from training.models.rate_levels import RateLevels, rate_distortion
from training.models.registry import register

Y_SYMBOL_RANGE = 1023  # y symbols are clipped to [−1023, 1023] (the top qualities need more than 255)
Z_TAIL_MASS = 1e-6
DEFAULT_SLICES = (16, 16, 32, 64, 64)
# The checkerboard context kernels learn CONTEXT_GAIN times faster than the rest (kernel = gain · weight,
# Adam's steps being about the learning rate in the weight): a warm start adds them at zero to a model
# whose other weights are converged at a low learning rate, where they would barely move.
CONTEXT_GAIN = 20.0
# The same for the level-conditional synthesis's per-level channel scales and shifts, and for the
# synthesis's residual blocks.
LEVEL_SYNTHESIS_GAIN = 10.0
SYNTHESIS_RESIDUAL_GAIN = 10.0
#: Encoder effort (`encode_refined`): effort e refines y for STEPS_PER_EFFORT · e steps, e ≤ MAX_EFFORT.
MAX_EFFORT = 5
STEPS_PER_EFFORT = 10


class ScaledConv2D(layers.Conv2D):
    """A linear Conv2D whose kernel is `gain` times its variable: a per-layer learning-rate multiplier
    that any optimizer honours. `effective_kernel()` is what it computes with."""

    def __init__(self, *args, gain: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = float(gain)

    def effective_kernel(self) -> tf.Tensor:
        return self.kernel * self.gain

    def call(self, inputs):
        return self.convolution_op(inputs, self.effective_kernel())

    def get_config(self) -> dict:
        return {**super().get_config(), "gain": self.gain}


@register("codec_cc")
class ChannelCodec(RateLevels, Autoencoder):
    """Channel-conditional codec with integer entropy parameters; see the module docstring."""

    architecture = "codec_cc"
    size_multiple = 64
    # Encoding reaches farthest: slice k's symbols depend on μ_k, which chains through the 3×3 slice
    # networks (±1 y cell per slice: ±80 px of support for the last of five), support reads ẑ within
    # ±112 px (h_s) and ẑ reads the image within ±142 px (g_a + h_a): ±334 px, six z cells.
    tile_halo = 384

    def __init__(self, input_shape=(None, None, 3), num_filters: int = 128, latent_channels: int = 192,
                 hyper_channels: int = 128, support_channels: int = 128, slices: Sequence[int] | None = None,
                 param_hidden: Sequence[int] = (96, 96), lrp_hidden: int = 64, lmbda: float = 0.01,
                 lmbdas: list[float] | None = None, z_radius: int = 32, level_weight_exponent: float = 0.0,
                 checkerboard: bool = False, level_synthesis: bool = False,
                 synthesis_residual: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(tuple(input_shape), **kwargs)
        n, m, c = int(num_filters), int(latent_channels), int(input_shape[-1])
        self.num_filters, self.latent_channels = n, m
        self.hyper_channels, self.support_channels = int(hyper_channels), int(support_channels)
        self.slices = [int(s) for s in (slices or DEFAULT_SLICES)]
        if sum(self.slices) != m or min(self.slices) < 1:
            raise ValueError(f"slices {self.slices} must be positive and sum to latent_channels {m}")
        self.param_hidden = [int(h) for h in param_hidden]
        self.lrp_hidden = int(lrp_hidden)
        self.lmbdas = sorted(float(v) for v in lmbdas) if lmbdas else [float(lmbda)]
        if min(self.lmbdas) <= 0:
            raise ValueError("every λ must be positive")
        self.lmbda = self.lmbdas[0]
        self.z_radius = int(z_radius)
        self.level_weight_exponent = float(level_weight_exponent)  # training only (RateLevels.level_weights)
        self.checkerboard = bool(checkerboard)
        if self.checkerboard:
            # a rest position reads its slice's anchors within ±3 y cells (5×5 context, then P_k's 3×3), which
            # read the earlier slices within ±1: +4 cells a slice on the 334 px above, 574 px
            self.tile_halo = 640
        nh, ns = self.hyper_channels, self.support_channels

        self.g_a = keras.Sequential(
            [_conv(n, 5, 2), GDN(), _conv(n, 5, 2), GDN(), _conv(n, 5, 2), GDN(), _conv(m, 5, 2)], name="analysis")
        self.g_s = keras.Sequential(
            [_deconv(n, 5, 2), GDN(inverse=True), _deconv(n, 5, 2), GDN(inverse=True),
             _deconv(n, 5, 2), GDN(inverse=True), _deconv(c, 5, 2)], name="synthesis")
        self.h_a = keras.Sequential(
            [_conv(nh, 3, activation="relu"), _conv(nh, 5, 2, activation="relu"), _conv(nh, 5, 2, use_bias=False)],
            name="hyper_analysis")
        self.h_s_layers = [_deconv(nh, 5, 2, activation="relu"), _deconv(nh, 5, 2, activation="relu"),
                           _conv(ns, 3)]
        self.param_layers: list[list[layers.Conv2D]] = []
        self.lrp_nets: list[keras.Sequential] = []
        for k, width in enumerate(self.slices):
            # 1×1 mixes the support with the slices before, one 3×3 adds spatial context, 1×1 gives
            # (μ, σ): the hyperprior already carries the spatial context, so most of the width goes to
            # the channel context; cheap enough to run in exact integer arithmetic (float64) at every
            # y position.
            h1, h2 = self.param_hidden
            self.param_layers.append([_conv(h1, 1, activation="relu"), _conv(h2, 3, activation="relu"),
                                      _conv(2 * width, 1)])
            # the predictor's last layer starts at zero: the residual starts at 0 (a warm start keeps its
            # source's pictures) and grows from the first gradient
            self.lrp_nets.append(keras.Sequential([_conv(self.lrp_hidden, 1, activation="relu"),
                                                   _conv(width, 3, kernel_initializer="zeros")], name=f"lrp_{k}"))
        # Build the entropy-parameter layers now: their integer twins need the kernels' shapes.
        self._int_hs = self._build_integer("h_s", self.h_s_layers, nh)
        self._int_param_nets = [self._build_integer(f"p{k}", self.param_layers[k], ns + sum(self.slices[:k]))
                            for k in range(len(self.slices))]
        for k in range(len(self.slices)):
            self.lrp_nets[k].build((None, None, None, ns + sum(self.slices[: k + 1])))
        # Checkerboard spatial context (He et al. 2021), optional: each slice in two passes, its anchors
        # (i + j even) as without it, then the other half with a 5×5 view of the anchors' ȳ added to
        # P_k's first hidden layer; coded as two half-width latents (`slice_names`). The kernels start at zero, so a model warm-started with it
        # computes exactly what it computed without it and learns how much the neighbours are worth.
        self.ctx_layers: list[layers.Conv2D] = []
        if self.checkerboard:
            for k, width in enumerate(self.slices):
                context = ScaledConv2D(self.param_hidden[0], 5, gain=CONTEXT_GAIN, padding="same", use_bias=False,
                                       kernel_initializer="zeros")
                context.build((None, None, None, width))
                self.ctx_layers.append(context)

        self._build_rate_levels(m)
        self.z_density = FactorizedDensity(name="z_density")
        self.z_density.build((None, nh))
        k = 2 * self.z_radius + 1
        self.z_medians = self.add_weight(name="z_medians", shape=(nh,), initializer="zeros", trainable=False)
        self.z_table = self.add_weight(name="z_table", shape=(nh, k),
                                       initializer=keras.initializers.Constant(1.0 / k), trainable=False)
        table = scale_table()
        self._scales = tf.constant(table, tf.float32)
        # fixed-point exponent of the integer support (set by finalize; the float residual predictors read
        # the support as support_int · 2^−exponent)
        self.support_exponent = self.add_weight(name="support_exponent", shape=(), initializer="zeros",
                                                trainable=False)
        self._scale_thresholds = tf.constant(integer_scale_thresholds(), tf.float64)
        self.finalize_stats: dict[str, float] = {}
        # the context convolutions' integer twins (added last: a model without the context keeps its layout)
        self._int_ctx = [IntegerConvWeights(self, f"c{k}", layer, width)
                         for k, (layer, width) in enumerate(zip(self.ctx_layers, self.slices))]
        # Level-conditional synthesis (Choi et al. 2019's conditional autoencoder, in gain-unit form): after
        # each inverse GDN of g_s, a per-level channel scale exp(s_l) and shift b_l, interpolated between
        # levels as the gains are. The gain units only rescale y, so one g_s serves every level and
        # compromises; these let the top levels' synthesis differ from the bottom's. Zero start: a warm
        # start computes what its source computed. Added last: other models keep their layout.
        self.level_synthesis = bool(level_synthesis) and len(self.lmbdas) > 1
        self.synthesis_scale = self.synthesis_shift = None
        if self.level_synthesis:
            shape = (3, len(self.lmbdas), n)
            self.synthesis_scale = self.add_weight(name="synthesis_scale", shape=shape, initializer="zeros")
            self.synthesis_shift = self.add_weight(name="synthesis_shift", shape=shape, initializer="zeros")
        # Residual blocks after g_s's inverse GDNs (`synthesis_residual[i]` after the i-th, at 1/8, 1/4 and
        # 1/2 of the image's size): capacity for the synthesis, which caps the top qualities (measured:
        # models_store/README.md). Identity at the start, added last, as the options above.
        self.synthesis_residual = [int(b) for b in (synthesis_residual or [0, 0, 0])]
        if len(self.synthesis_residual) != 3 or min(self.synthesis_residual) < 0:
            raise ValueError(f"synthesis_residual {self.synthesis_residual}: three block counts, one per inverse GDN")
        self.g_s_blocks = [[ResidualBlock(n, gain=SYNTHESIS_RESIDUAL_GAIN, name=f"g_s_res{i}_{b}") for b in range(count)]
                           for i, count in enumerate(self.synthesis_residual)]
        for block in (b for stage in self.g_s_blocks for b in stage):
            block.build((None, None, None, n))
        if self.level_synthesis or any(self.synthesis_residual):
            self.g_s.build((None, None, None, m))  # called layer by layer (`_synthesis`), never as a whole

    def _build_integer(self, name: str, convs: list[layers.Conv2D], in_channels: int) -> list[IntegerConvWeights]:
        states, channels = [], in_channels
        for i, layer in enumerate(convs):
            layer.build((None, None, None, channels))
            states.append(IntegerConvWeights(self, f"{name}_{i}", layer, channels))
            channels = int(layer.filters)
        return states

    def get_config(self) -> dict:
        config = {**super().get_config(), "num_filters": self.num_filters, "latent_channels": self.latent_channels,
                  "hyper_channels": self.hyper_channels, "support_channels": self.support_channels,
                  "slices": self.slices, "param_hidden": self.param_hidden, "lrp_hidden": self.lrp_hidden,
                  "lmbda": self.lmbda, "z_radius": self.z_radius}
        if self.level_weight_exponent:
            config["level_weight_exponent"] = self.level_weight_exponent
        if self.checkerboard:
            config["checkerboard"] = True
        if self.level_synthesis:
            config["level_synthesis"] = True
        if any(self.synthesis_residual):
            config["synthesis_residual"] = self.synthesis_residual
        if len(self.lmbdas) > 1:
            config |= {"lmbdas": self.lmbdas, "rate_level": int(self.rate_level.numpy()),
                       "coded_lmbda": self.lmbdas[int(self.rate_level.numpy())]}
        return config

    # ---- warm start from a trained hyperprior codec (`codec`, e.g. natural version 8) ----------------
    def adopt(self, source: keras.Model) -> None:
        """Start from a trained `codec` with the same M and z channels and at most our N, computing what
        it computed (training/models/warm_start.py: `adopt_into_channel_codec`)."""
        from training.models.warm_start import adopt_into_channel_codec

        adopt_into_channel_codec(self, source)

    # ---- portable weights (training.snapshot, training/gpu/codec_cc_torch.py) -----------------------
    def named_weights(self) -> dict[str, tf.Variable]:
        """The trained weights by stable names (`g_a.0.kernel`, `p3.1.bias`, `z_density.matrix_0`,
        `log_gain`, ...), independent of Keras's generated layer names and of creation order, so that a
        snapshot reads back into a fresh model and into the PyTorch twin. The coding state (integer
        networks, z tables) is left out: `finalize` recomputes it."""
        groups: dict[str, Sequence[keras.layers.Layer]] = {
            "g_a": self.g_a.layers, "g_s": self.g_s.layers, "h_a": self.h_a.layers, "h_s": self.h_s_layers}
        groups |= {f"p{k}": net for k, net in enumerate(self.param_layers)}
        groups |= {f"lrp{k}": net.layers for k, net in enumerate(self.lrp_nets)}
        groups |= {f"ctx{k}": [layer] for k, layer in enumerate(self.ctx_layers)}
        groups |= {f"g_s_res{i}": stage for i, stage in enumerate(self.g_s_blocks) if stage}
        named = {f"{group}.{i}.{weight.name}": weight
                 for group, layers_ in groups.items() for i, layer in enumerate(layers_) for weight in layer.weights}
        named |= {f"z_density.{weight.name}": weight for weight in self.z_density.weights}
        if self.log_gain is not None:
            named |= {"log_gain": self.log_gain, "log_inv_gain": self.log_inv_gain}
        if self.level_synthesis:
            named |= {"synthesis_scale": self.synthesis_scale, "synthesis_shift": self.synthesis_shift}
        return named

    # ---- float entropy model (training) -----------------------------------------------------------
    def _split(self, y: tf.Tensor) -> list[tf.Tensor]:
        return tf.split(y, self.slices, axis=-1)

    def _support(self, z_hat: tf.Tensor, record: dict | None = None) -> tf.Tensor:
        x = z_hat
        for i, layer in enumerate(self.h_s_layers):
            x = layer(x)
            if record is not None:
                record.setdefault(f"h_s_{i}", []).append(float(tf.reduce_max(tf.abs(x))))
        return x

    def _params(self, k: int, support: tf.Tensor, conditioning: list[tf.Tensor],
                record: dict | None = None, context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """(μ_k, raw σ_k) from the float layers; `context` (checkerboard) joins the first hidden layer."""
        x = tf.concat([support, *conditioning], axis=-1) if conditioning else support
        for i, layer in enumerate(self.param_layers[k]):
            x = layer(x)
            if i == 0 and context is not None:
                x = x + context
            if record is not None and i < len(self.param_layers[k]) - 1:
                record.setdefault(f"p{k}_{i}", []).append(float(tf.reduce_max(x)))
        mean, raw_scale = tf.split(x, 2, axis=-1)
        return mean, raw_scale

    def _checkerboard_params(self, k: int, y_k: tf.Tensor, mean: tf.Tensor, raw_scale: tf.Tensor,
                             support: tf.Tensor, bars: list[tf.Tensor],
                             record: dict | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """The anchors keep the parameters of the pass without context (`mean`, `raw_scale`); the other
        positions get those of a second pass that sees the anchors' ȳ_k (rounded around their own means,
        as the decoder will have them) through the slice's context convolution."""
        anchors = board.anchor_mask(y_k)
        anchor_bars = y_k + tf.stop_gradient(tf.round(y_k - mean) + mean - y_k)
        context = self.ctx_layers[k](anchor_bars * anchors)
        if record is not None:
            record.setdefault(f"c{k}", []).append(float(tf.reduce_max(tf.abs(context))))
        mean_n, raw_n = self._params(k, support, bars, record, context=context)
        return anchors * mean + (1 - anchors) * mean_n, anchors * raw_scale + (1 - anchors) * raw_n

    def _lrp(self, k: int, support: tf.Tensor, conditioning: list[tf.Tensor], training: bool) -> tf.Tensor:
        return 0.5 * tf.tanh(self.lrp_nets[k](tf.concat([support, *conditioning], axis=-1), training=training))

    def _forward(self, images: tf.Tensor, training: bool, record: dict | None = None):
        """(x̂, [likelihoods of each slice], likelihoods of z, λ per image): noisy rates when training,
        coded (rounded) values otherwise; the float entropy model throughout."""
        if training:
            positions = self._random_positions(images)
        else:
            positions = self._positions(None, images)
        gain, inv_gain = self._gains(positions)
        y = self.g_a(images, training=training) * gain
        z = self.h_a(y, training=training)
        if training:
            z_hat = z + tf.random.uniform(tf.shape(z), -0.5, 0.5)
        else:
            z_hat = self._z_symbols(z) + self.z_medians
        support = self._support(z_hat, record)
        bars, synth, likelihoods = [], [], []
        for k, y_k in enumerate(self._split(y)):
            mean, raw_scale = self._params(k, support, bars, record)
            if self.checkerboard:
                mean, raw_scale = self._checkerboard_params(k, y_k, mean, raw_scale, support, bars, record)
            scale = lower_bound(raw_scale, SCALE_BOUND, training)
            y_tilde = y_k + tf.random.uniform(tf.shape(y_k), -0.5, 0.5) if training else tf.round(y_k - mean) + mean
            likelihoods.append(gaussian_likelihood(y_tilde - mean, scale, training))
            bar = y_k + tf.stop_gradient(tf.round(y_k - mean) + mean - y_k)
            bars.append(bar)
            synth.append(bar + self._lrp(k, support, bars, training))
        x_hat = self._synthesis(tf.concat(synth, axis=-1) * inv_gain, positions, training)
        z_likelihood = self.z_density.likelihood(z_hat, training)
        return x_hat, likelihoods, z_likelihood, self._lmbda_at(positions)

    def call(self, images, training=False):
        x_hat = self._forward(images, bool(training))[0]
        return x_hat if training else tf.clip_by_value(x_hat, 0.0, 1.0)

    def compute_losses(self, images, training=True):
        images = tf.convert_to_tensor(images, tf.float32)
        x_hat, y_likelihoods, z_likelihood, lmbda = self._forward(images, bool(training))
        weights = self.level_weights(lmbda) if training else None
        return rate_distortion(images, x_hat, y_likelihoods, z_likelihood, lmbda, bool(training), weights)

    # ---- coding state: integer entropy parameters -----------------------------------------------
    def _z_symbols(self, z: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.round(z - self.z_medians), -self.z_radius, self.z_radius)

    def _int_support(self, z_symbols: tf.Tensor) -> tf.Tensor:
        medians = to_fixed(self.z_medians, Z_EXPONENT)
        x = tf.cast(z_symbols, tf.float64) * 2.0**Z_EXPONENT + medians
        for state in self._int_hs:
            x = state(x)
        return x

    def _int_params(self, k: int, support: tf.Tensor, bars: list[tf.Tensor],
                    anchor_bars: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """(μ_int at 2^−8, scale index) of slice k from integer support and ȳ_int of the slices before;
        with `anchor_bars` (ȳ_int of slice k's anchors, zero elsewhere) the checkerboard's second pass."""
        x = tf.concat([support, *bars], axis=-1) if bars else support
        for i, state in enumerate(self._int_param_nets[k]):
            x = state(x)
            if i == 0 and anchor_bars is not None:
                x = x + self._int_ctx[k](anchor_bars)  # same exponent per channel (the conversion's choice)
        mean, scale = tf.split(x, 2, axis=-1)
        return mean, integer_scale_index(scale, self._scale_thresholds)

    @staticmethod
    def _bar(symbols: tf.Tensor, mean_int: tf.Tensor) -> tf.Tensor:
        return tf.cast(symbols, tf.float64) * 2.0**MEAN_EXPONENT + mean_int

    def _symbols_and_bars(self, y: tf.Tensor, z_symbols: tf.Tensor) -> tuple[list[tf.Tensor], list[tf.Tensor], tf.Tensor]:
        """Encoder side: y's slice symbols round(y_k − μ_k) and ȳ_int, from integer means."""
        support = self._int_support(z_symbols)
        symbols, bars = [], []
        for k, y_k in enumerate(self._split(y)):
            mean_int, _ = self._int_params(k, support, bars)
            if self.checkerboard:  # the anchors' symbols first; the rest's means see them
                mean_int = self._rest_pass(k, support, bars, self._y_symbols(y_k, mean_int), mean_int)[0]
            sym = self._y_symbols(y_k, mean_int)
            symbols.append(sym)
            bars.append(self._bar(sym, mean_int))
        return symbols, bars, support

    def _rest_pass(self, k: int, support: tf.Tensor, bars: list[tf.Tensor], anchor_symbols: tf.Tensor,
                   anchor_mean: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The checkerboard's second pass of slice k: (μ_int on the whole grid, the anchors' from the first
        pass and the rest's from this one; the rest's scale indices) from the anchors' symbols (on the
        whole grid, anything elsewhere) and the first pass's means."""
        anchors = board.anchor_mask(anchor_mean)
        rest_mean, rest_index = self._int_params(k, support, bars, self._bar(anchor_symbols, anchor_mean) * anchors)
        return anchors * anchor_mean + (1 - anchors) * rest_mean, rest_index

    @staticmethod
    def _y_symbols(y_k: tf.Tensor, mean_int: tf.Tensor) -> tf.Tensor:
        mean = tf.cast(mean_int * 2.0**-MEAN_EXPONENT, tf.float32)
        return tf.clip_by_value(tf.round(y_k - mean), -Y_SYMBOL_RANGE, Y_SYMBOL_RANGE)

    def slice_names(self, k: int) -> list[str]:
        """The latents slice k is coded as: `y<k>`, or its checkerboard halves `y<k>a` (anchors, coded
        first) and `y<k>b` (the rest), each packed to half the grid's width."""
        return [f"y{k}a", f"y{k}b"] if self.checkerboard else [f"y{k}"]

    def _slice_symbols(self, latents: Mapping[str, tf.Tensor], k: int) -> tf.Tensor:
        """Slice k's symbols on the whole grid, from its latent(s)."""
        if self.checkerboard:
            return board.unpack(latents[f"y{k}a"], latents[f"y{k}b"])
        return latents[f"y{k}"]

    def _coded_slices(self, symbols: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        """Slices' symbols on the whole grid → the latents they are coded as (int32)."""
        out = {}
        for k, sym in enumerate(symbols):
            sym = tf.cast(sym, tf.int32)
            if self.checkerboard:
                out |= {f"y{k}a": board.pack(sym, board.ANCHORS), f"y{k}b": board.pack(sym, board.REST)}
            else:
                out[f"y{k}"] = sym
        return out

    def _decoded_bars(self, latents: Mapping[str, tf.Tensor]
                      ) -> tuple[list[tf.Tensor], tf.Tensor, dict[str, tf.Tensor]]:
        """Decoder side: ȳ_int of every slice, the integer support, and every y latent's scale indices."""
        support = self._int_support(latents["z"])
        bars, indices = [], {}
        for k in range(len(self.slices)):
            mean_int, index = self._int_params(k, support, bars)
            if self.checkerboard:
                indices[f"y{k}a"] = board.pack(index, board.ANCHORS)
                mean_int, rest_index = self._rest_pass(k, support, bars, board.unpack(latents[f"y{k}a"]), mean_int)
                indices[f"y{k}b"] = board.pack(rest_index, board.REST)
            else:
                indices[f"y{k}"] = index
            bars.append(self._bar(self._slice_symbols(latents, k), mean_int))
        return bars, support, indices

    def _synthesis(self, latent: tf.Tensor, positions: tf.Tensor, training: bool, subpixel: bool = False) -> tf.Tensor:
        """g_s, with the level-conditional scales and shifts and then the residual blocks after its inverse
        GDNs when the model has them. `subpixel`: transposed convolutions as conv + depth_to_space
        (training/layers/subpixel.py: same function, faster; inference)."""
        if not self.level_synthesis and not any(self.synthesis_residual):
            return run_sequential(self.g_s, latent) if subpixel else self.g_s(latent, training=training)
        if self.level_synthesis:
            # tables [3 layers, L, N] → per image [B, 3, N], interpolated between levels as the gains are
            scales = tf.exp(LEVEL_SYNTHESIS_GAIN * self._interpolated(tf.transpose(self.synthesis_scale, [1, 0, 2]),
                                                                      positions))
            shifts = LEVEL_SYNTHESIS_GAIN * self._interpolated(tf.transpose(self.synthesis_shift, [1, 0, 2]), positions)
        x, i = latent, 0
        for layer in self.g_s.layers:
            if subpixel and isinstance(layer, keras.layers.Conv2DTranspose):
                x = subpixel_deconv(layer, x)
            else:
                x = layer(x, training=training)
            if isinstance(layer, GDN):
                if self.level_synthesis:
                    x = x * scales[:, i, None, None, :] + shifts[:, i, None, None, :]
                for block in self.g_s_blocks[i]:
                    x = block(x)
                i += 1
        return x

    def _synthesise(self, bars: list[tf.Tensor], support: tf.Tensor, inv_gain: tf.Tensor,
                    positions: tf.Tensor) -> tf.Tensor:
        support_f = tf.cast(support * self._support_unit, tf.float32)
        bars_f = [tf.cast(b * 2.0**-MEAN_EXPONENT, tf.float32) for b in bars]
        synth = [bars_f[k] + self._lrp(k, support_f, bars_f[: k + 1], False) for k in range(len(self.slices))]
        latent = tf.concat(synth, axis=-1) * inv_gain
        return tf.clip_by_value(self._synthesis(latent, positions, False, subpixel=True), 0.0, 1.0)

    def encode(self, images: tf.Tensor, quality: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        gain = self._gains(self._positions(quality, images))[0]
        return self._coded(self.g_a(images, training=False) * gain)

    def _coded(self, y: tf.Tensor) -> dict[str, tf.Tensor]:
        """The latents a y (after the gains) is coded as: z's symbols from h_a(y), then y's slices."""
        z_symbols = self._z_symbols(self.h_a(y, training=False))
        symbols, _, _ = self._symbols_and_bars(y, z_symbols)
        return {"z": tf.cast(z_symbols, tf.int32), **self._coded_slices(symbols)}

    # ---- encoder effort ------------------------------------------------------------------------
    @property
    def supports_effort(self) -> bool:
        """Whether `encode_refined` is available (not with the checkerboard, whose anchors' rounding
        the relaxed loss does not model)."""
        return not self.checkerboard

    def effort_spec(self) -> EffortSpec | None:
        if not self.supports_effort or self.rate_spec() is None:
            return None
        return EffortSpec(max_effort=MAX_EFFORT, steps_per_effort=STEPS_PER_EFFORT)

    def encode_refined(self, images: tf.Tensor, quality: tf.Tensor | None, effort: tf.Tensor) -> dict[str, tf.Tensor]:
        """`encode` after STEPS_PER_EFFORT · effort [B] steps of latent refinement per image
        (`refinement.py`); effort 0 codes exactly what `encode` codes. The decoder is unchanged."""
        if not self.supports_effort:
            raise NotImplementedError("latent refinement does not model the checkerboard context")
        positions = self._positions(quality, images)
        y = self.g_a(images, training=False) * self._gains(positions)[0]
        steps = tf.clip_by_value(tf.cast(effort, tf.int32), 0, MAX_EFFORT) * STEPS_PER_EFFORT

        def loss(latent: tf.Tensor, tau: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
            return self._relaxed_loss(images, latent, positions, tau, seed)

        return self._coded(refinement.refine(loss, y, steps, MAX_EFFORT * STEPS_PER_EFFORT))

    def _relaxed_loss(self, images: tf.Tensor, y: tf.Tensor, positions: tf.Tensor, tau: tf.Tensor,
                      seed: tf.Tensor) -> tf.Tensor:
        """Per-image λ·255²·MSE + bpp with y's rounding relaxed (SGA around each slice's mean) and z's
        rounded straight-through: the loss the refinement descends, in the float entropy model."""
        z = self.h_a(y, training=False) - self.z_medians
        z_hat = z + tf.stop_gradient(tf.round(z) - z) + self.z_medians
        support = self._support(z_hat)
        bars, synth, nats = [], [], 0.0
        for k, y_k in enumerate(self._split(y)):
            mean, raw_scale = self._params(k, support, bars)
            centred = refinement.annealed_round(y_k - mean, tau, seed + [0, 1000 * (k + 1)])
            likelihood = gaussian_likelihood(centred, lower_bound(raw_scale, SCALE_BOUND, True), True)
            nats += -tf.reduce_sum(tf.math.log(likelihood), axis=[1, 2, 3])
            bars.append(centred + mean)
            synth.append(bars[-1] + self._lrp(k, support, bars, False))
        nats += -tf.reduce_sum(tf.math.log(self.z_density.likelihood(z_hat, True)), axis=[1, 2, 3])
        x_hat = self._synthesis(tf.concat(synth, axis=-1) * self._gains(positions)[1], positions, False)
        shape = tf.shape(images)
        bpp = nats / (tf.cast(shape[1] * shape[2], tf.float32) * np.log(2.0))
        mse = tf.reduce_mean(tf.square(images - x_hat), axis=[1, 2, 3])
        return self._lmbda_at(positions) * 255.0**2 * mse + bpp

    def decode(self, latents: dict[str, tf.Tensor], quality: tf.Tensor | None = None) -> tf.Tensor:
        bars, support, _ = self._decoded_bars(latents)
        positions = self._positions(quality, latents["z"])
        return self._synthesise(bars, support, self._gains(positions)[1], positions)

    def reconstruct(self, images: tf.Tensor, quality: tf.Tensor | None = None) -> tf.Tensor:
        return self.decode(self.encode(images, quality), quality)

    # ---- the per-slice stages the service entropy-codes with -----------------------------------
    def _stage_plan(self) -> list[tuple[str, int, bool]]:
        """(latent, slice, whether it is a checkerboard's second half) for every y latent, in coding order."""
        return [(name, k, name.endswith("b")) for k in range(len(self.slices)) for name in self.slice_names(k)]

    def stage_names(self) -> list[str]:
        """The parameter stages in coding order: `params_<latent>` for every y latent."""
        return [f"params_{name}" for name, _, _ in self._stage_plan()]

    def stage_inputs(self, k: int, rest: bool = False) -> list[str]:
        """Input names of slice k's stage (all int32): z (k = 0) or the support and every earlier slice's
        latents and means; a checkerboard's second half (`rest`) the support, those, its anchors and
        their means (`mean_y<k>a`)."""
        earlier = [n for j in range(k) for n in self.slice_names(j)]
        inputs = ["z"] if k == 0 else ["support", *earlier, *[f"mean_y{j}" for j in range(k)]]
        if rest:
            inputs = ["support", *inputs[1:], f"y{k}a", f"mean_y{k}a"]
        return inputs

    def stage(self, k: int, inputs: Mapping[str, tf.Tensor], rest: bool = False) -> dict[str, tf.Tensor]:
        """Scale indices of one of slice k's latents (under its name) and what later stages carry forward."""
        if "z" in inputs:
            support = self._int_support(inputs["z"])
        else:
            support = tf.cast(inputs["support"], tf.float64)
        bars = [self._bar(self._slice_symbols(inputs, j), tf.cast(inputs[f"mean_y{j}"], tf.float64)) for j in range(k)]
        out: dict[str, tf.Tensor] = {}
        if rest:  # the rest of a checkerboard slice, from its anchors
            mean, index = self._rest_pass(k, support, bars, board.unpack(inputs[f"y{k}a"]),
                                          tf.cast(inputs[f"mean_y{k}a"], tf.float64))
            out |= {f"y{k}b": board.pack(index, board.REST), f"mean_y{k}": tf.cast(mean, tf.int32)}
        else:
            latent = self.slice_names(k)[0]
            mean_int, index = self._int_params(k, support, bars)
            if self.checkerboard:
                out |= {latent: board.pack(index, board.ANCHORS), f"mean_y{k}a": tf.cast(mean_int, tf.int32)}
            else:
                out |= {latent: index, f"mean_y{k}": tf.cast(mean_int, tf.int32)}
            if k == 0:
                out["support"] = tf.cast(support, tf.int32)
        return out

    def parameter_stages(self) -> dict[str, tuple[list[tf.TensorSpec], Callable]]:
        """One signature per y latent (inputs as `stage_inputs`, all int32)."""
        widths = {"z": self.hyper_channels, "support": self.support_channels}
        for k, w in enumerate(self.slices):
            widths |= {name: w for name in self.slice_names(k)} | {f"mean_y{k}": w, f"mean_y{k}a": w}
        return {f"params_{name}": ([tf.TensorSpec([None, None, None, widths[n]], tf.int32, name=n)
                                    for n in self.stage_inputs(k, rest)],
                                   lambda inputs, k=k, rest=rest: self.stage(k, inputs, rest))
                for name, k, rest in self._stage_plan()}

    def hyper_decode(self, latents: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Every y latent's scale indices at once (tests and ideal code lengths; the service uses the
        stages)."""
        return self._decoded_bars(latents)[2]

    # ---- finalize: tables, calibration, conversion ---------------------------------------------
    @property
    def _support_unit(self) -> tf.Tensor:
        return tf.pow(tf.constant(2.0, tf.float64), -tf.cast(tf.convert_to_tensor(self.support_exponent), tf.float64))

    def finalize(self, dataset: tf.data.Dataset | None = None, max_batches: int = 16) -> None:
        """Freeze the z tables, calibrate the entropy-parameter activations on `dataset` (batches of
        training crops, coded at every level) and convert h_s and every P_k to integer layers."""
        c = self.image_shape[-1]
        if not self.built:
            self(tf.zeros([1, self.size_multiple, self.size_multiple, c]))
        quantiles = self.z_density.quantiles([Z_TAIL_MASS, 0.5, 1.0 - Z_TAIL_MASS])
        medians = np.round(quantiles[:, 1] * 2.0**Z_EXPONENT) / 2.0**Z_EXPONENT
        self.z_medians.assign(medians.astype(np.float32))
        self.z_table.assign(self.z_density.pmf_table(medians, self.z_radius).astype(np.float32))
        needed = float(np.max(np.maximum(medians - quantiles[:, 0], quantiles[:, 2] - medians)))
        stats: dict[str, float] = {"z_support_needed": needed, "z_radius": float(self.z_radius)}

        record: dict[str, list[float]] = {}
        batches = [tf.zeros([1, 128, 128, c]) + 0.5] if dataset is None else [
            b[0] if isinstance(b, (tuple, list)) else b for b in dataset.take(max_batches)]
        saved_level = int(self.rate_level.numpy())
        for i, batch in enumerate(batches):
            for level in ({0, self.num_levels - 1, i % self.num_levels} if self.num_levels > 1 else {0}):
                self.rate_level.assign(level)
                self._forward(batch, training=False, record=record)
        self.rate_level.assign(saved_level)
        peak = {key: max(values) for key, values in record.items()}
        self._convert(peak, stats)
        self.finalize_stats = stats
        self.finalized = True
        if dataset is not None:
            stats |= self._clipping(batches[: min(4, len(batches))])
            if stats.get("z_clipped_fraction", 0.0) > 1e-3:
                warnings.warn(f"{stats['z_clipped_fraction']:.2%} of z symbols fall outside ±{self.z_radius}",
                              stacklevel=2)

    def _convert(self, peak: Mapping[str, float], stats: dict[str, float]) -> None:
        convert_entropy_networks(self, peak, stats, Y_SYMBOL_RANGE)

    def _clipping(self, batches: list[tf.Tensor]) -> dict[str, float]:
        clipped_z = clipped_y = total_z = total_y = 0
        for images in batches:
            gain = self._gains(self._positions(None, images))[0]
            y = self.g_a(images, training=False) * gain
            z = self.h_a(y, training=False)
            clipped_z += int(tf.reduce_sum(tf.cast(tf.abs(tf.round(z - self.z_medians)) > self.z_radius, tf.int32)))
            symbols, _, _ = self._symbols_and_bars(y, self._z_symbols(z))
            clipped_y += sum(int(tf.reduce_sum(tf.cast(tf.abs(s) >= Y_SYMBOL_RANGE, tf.int32))) for s in symbols)
            total_z, total_y = total_z + int(tf.size(z)), total_y + int(tf.size(y))
        return {"z_clipped_fraction": clipped_z / max(total_z, 1), "y_clipped_fraction": clipped_y / max(total_y, 1)}

    def latent_specs(self) -> list[LatentSpec]:
        table = [float(s) for s in scale_table()]
        return [LatentSpec(name="z", channels=self.hyper_channels, stride=64, coding="categorical",
                           min_symbol=-self.z_radius, max_symbol=self.z_radius)] + [
            LatentSpec(name=name, channels=width, stride=16, stride_x=32 if self.checkerboard else None,
                       coding="gaussian", min_symbol=-Y_SYMBOL_RANGE, max_symbol=Y_SYMBOL_RANGE, scale_table=table,
                       scale_source=f"params_{name}")
            for k, width in enumerate(self.slices) for name in self.slice_names(k)]

    def entropy_tables(self) -> dict[str, tf.Tensor]:
        return {"z": tf.convert_to_tensor(self.z_table)}

    def coded_bits(self, latents: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Information content (bits per image) under the exact coding models (ideal code lengths)."""
        z = tf.cast(latents["z"], tf.int32)
        table = self.z_table / tf.reduce_sum(self.z_table, axis=1, keepdims=True)
        moved = tf.transpose(z + self.z_radius, [3, 0, 1, 2])
        index = tf.reshape(moved, [self.hyper_channels, -1])
        z_probs = tf.reshape(tf.gather(table, index, batch_dims=1), tf.shape(moved))
        bits = {"z": -tf.reduce_sum(tf.math.log(z_probs), axis=[0, 2, 3]) / np.log(2.0)}
        for name, index in self.hyper_decode(latents).items():
            probs = gaussian_likelihood(tf.cast(latents[name], tf.float32), tf.gather(self._scales, index))
            bits[name] = -tf.reduce_sum(tf.math.log(probs), axis=[1, 2, 3]) / np.log(2.0)
        return bits
