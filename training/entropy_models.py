"""Entropy models of the learned codec, in plain TF: what the rate term of the loss is made of.

* `FactorizedDensity` - the "entropy bottleneck" of Ballé et al. 2018 (appendix 6.1): one learned,
  monotone cumulative c(x) per channel (a small MLP with softplus weights and tanh gates), so the
  likelihood of a noisy/quantised value v is c(v + ½) − c(v − ½). Used for the hyper-latent z.
  `quantiles` inverts c by bisection (no auxiliary loss needed) and `pmf_table` freezes it into the
  per-channel probability tables that the service range-codes with.
* `gaussian_likelihood` - a zero-mean Gaussian of a given scale convolved with U(−½, ½), i.e. the
  difference of normal CDFs over the unit bin: the conditional model of y given the hyperprior.
* `scale_table` / `scale_index` - the fixed log-spaced table of Gaussian scales the service codes y
  with (CompressAI's 64 scales from 0.11 to 256) and the deterministic mapping of a predicted scale
  to the index of the smallest table scale that is not below it.

Training vs coding (as in TFC): during training the models see continuous values with additive
uniform noise; after `finalize` the model codes integers with frozen tables, so the real bitstream
length matches the estimated rate up to the coder's word overhead.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from training.layers.bound import lower_bound

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> np.ndarray:
    """The Gaussian scales the bitstream uses, float64 (the card stores them; the service reads them)."""
    return np.exp(np.linspace(np.log(SCALE_MIN), np.log(SCALE_MAX), SCALE_LEVELS))


def scale_index(scales: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
    """int32 index of the smallest table entry >= scale (clipped to the last entry), same shape."""
    flat = tf.reshape(tf.cast(scales, table.dtype), [-1])
    index = tf.searchsorted(table, flat, side="left", out_type=tf.int32)
    index = tf.minimum(index, tf.shape(table, out_type=tf.int32)[0] - 1)
    return tf.reshape(index, tf.shape(scales))


# Fixed point of integer entropy parameters (training/layers/integer.py), shared by every codec:
SCALE_EXPONENT = 10  # σ as integers at 2^−10
MEAN_EXPONENT = 8  # μ (and ȳ = symbol + μ) as integers at 2^−8
MEAN_LIMIT = 2.0**20  # |μ_int| ≤ 2^20, i.e. |μ| ≤ 4096
Z_EXPONENT = 4  # ẑ = z symbol + median, the median rounded to 1/16: integers at 2^−4


def integer_scale_thresholds() -> np.ndarray:
    """The scale table at 2^−SCALE_EXPONENT, rounded up: σ_int reaches threshold i ⇔ σ ≥ table[i]
    (up to that rounding), float64 holding integers."""
    return np.ceil(scale_table() * 2.0**SCALE_EXPONENT)


def integer_scale_index(sigma_int: tf.Tensor, thresholds: tf.Tensor) -> tf.Tensor:
    """int32 index of the first threshold ≥ σ_int (clipped to the last): exact on integers, so the
    same on every machine; σ_int is float64 holding integers."""
    flat = tf.reshape(sigma_int, [-1])
    index = tf.searchsorted(thresholds, flat, side="left", out_type=tf.int32)
    index = tf.minimum(index, tf.shape(thresholds, out_type=tf.int32)[0] - 1)
    return tf.reshape(index, tf.shape(sigma_int))


def _std_normal_cdf(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * tf.math.erfc(-x * (2.0**-0.5))


def gaussian_likelihood(values: tf.Tensor, scales: tf.Tensor, training: bool = False) -> tf.Tensor:
    """P(bin of `values`) under N(0, scale²) ⊛ U(−½, ½); values are already centred (y − μ)."""
    values = tf.abs(values)  # symmetric: evaluate the left tail, where the CDF is accurate
    upper = _std_normal_cdf((0.5 - values) / scales)
    lower = _std_normal_cdf((-0.5 - values) / scales)
    return lower_bound(upper - lower, LIKELIHOOD_BOUND, training)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


class FactorizedDensity(keras.layers.Layer):
    """Per-channel learned univariate density over the last axis (Ballé et al. 2018, appendix 6.1)."""

    def __init__(self, filters: Sequence[int] = (3, 3, 3), init_scale: float = 10.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        self.channels = channels
        widths = (1, *self.filters, 1)
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        # One attribute per weight (matrix_0, bias_0, factor_0, ...), not lists: tf.train.Checkpoint does
        # not follow a Keras 3 layer's list attributes, so weights held only in lists were missing from
        # training checkpoints (a resumed run restarted this density from scratch).
        self._depth = len(widths) - 1
        for i in range(self._depth):
            init = float(np.log(np.expm1(1.0 / scale / widths[i + 1])))
            setattr(self, f"matrix_{i}", self.add_weight(
                name=f"matrix_{i}", shape=(channels, widths[i + 1], widths[i]),
                initializer=keras.initializers.Constant(init)))
            setattr(self, f"bias_{i}", self.add_weight(
                name=f"bias_{i}", shape=(channels, widths[i + 1], 1),
                initializer=keras.initializers.RandomUniform(-0.5, 0.5)))
            if i < self._depth - 1:
                setattr(self, f"factor_{i}", self.add_weight(
                    name=f"factor_{i}", shape=(channels, widths[i + 1], 1), initializer="zeros"))

    def logits_cumulative(self, x: tf.Tensor) -> tf.Tensor:
        """logit(c(x)) for x shaped [channels, 1, n]; monotone increasing in x for every channel."""
        for i in range(self._depth):
            x = tf.linalg.matmul(tf.nn.softplus(getattr(self, f"matrix_{i}")), x) + getattr(self, f"bias_{i}")
            if i < self._depth - 1:
                x = x + tf.tanh(getattr(self, f"factor_{i}")) * tf.tanh(x)
        return x

    def likelihood(self, values: tf.Tensor, training: bool = False) -> tf.Tensor:
        """P(bin of each value) = c(v + ½) − c(v − ½), per channel of the last axis; same shape."""
        rank = values.shape.rank
        perm = [rank - 1, *range(rank - 1)]
        moved = tf.transpose(values, perm)
        flat = tf.reshape(moved, [self.channels, 1, -1])
        lower = self.logits_cumulative(flat - 0.5)
        upper = self.logits_cumulative(flat + 0.5)
        # Subtract in the tail where sigmoid is accurate: flip the sign on the right half.
        sign = tf.stop_gradient(tf.where(lower + upper > 0, -1.0, 1.0))
        lik = tf.abs(tf.sigmoid(sign * upper) - tf.sigmoid(sign * lower))
        lik = lower_bound(lik, LIKELIHOOD_BOUND, training)
        lik = tf.reshape(lik, tf.shape(moved))
        return tf.transpose(lik, [*range(1, rank), 0])

    def quantiles(self, probs: Sequence[float], iterations: int = 60) -> np.ndarray:
        """x with c(x) = p per channel and per p, by bisection on the monotone cumulative: [channels, P]."""
        targets = np.log(np.asarray(probs, np.float64)) - np.log1p(-np.asarray(probs, np.float64))
        targets = np.broadcast_to(targets[None, None, :], (self.channels, 1, len(probs)))

        def logits(x: np.ndarray) -> np.ndarray:
            return self.logits_cumulative(tf.constant(x, tf.float32)).numpy().astype(np.float64)

        lo = np.full(targets.shape, -1.0)
        hi = np.full(targets.shape, 1.0)
        for _ in range(40):  # widen until the target is bracketed (|x| up to 2^40: any sane density)
            below, above = logits(lo) > targets, logits(hi) < targets
            if not below.any() and not above.any():
                break
            lo = np.where(below, lo * 2.0, lo)
            hi = np.where(above, hi * 2.0, hi)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            left = logits(mid) < targets
            lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
        return (0.5 * (lo + hi))[:, 0, :]

    def pmf_table(self, centers: np.ndarray, radius: int) -> np.ndarray:
        """Probabilities of center + k, k in [−radius, radius], per channel: [channels, 2·radius + 1].

        The mass beyond the support is folded into the two edge bins, every entry is at least 1e-9,
        rows sum to 1 (float64).
        """
        offsets = np.arange(-radius, radius + 1, dtype=np.float64)
        points = np.asarray(centers, np.float64)[:, None, None] + offsets[None, None, :]
        upper = self.logits_cumulative(tf.constant(points + 0.5, tf.float32)).numpy().astype(np.float64)[:, 0]
        lower = self.logits_cumulative(tf.constant(points - 0.5, tf.float32)).numpy().astype(np.float64)[:, 0]
        sign = np.where(lower + upper > 0, -1.0, 1.0)
        pmf = np.abs(np.exp(_log_sigmoid(sign * upper)) - np.exp(_log_sigmoid(sign * lower)))
        pmf[:, 0] = np.exp(_log_sigmoid(upper[:, 0]))  # everything below the first bin's upper edge
        pmf[:, -1] = np.exp(_log_sigmoid(-lower[:, -1]))  # everything above the last bin's lower edge
        pmf = np.maximum(pmf, LIKELIHOOD_BOUND)
        return pmf / pmf.sum(axis=1, keepdims=True)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": list(self.filters), "init_scale": self.init_scale}
