"""Encoder effort: refine one image's latents against its own rate–distortion loss before coding.

An amortised encoder (g_a) gives every image the latents that are best on average over the training
set; gradient steps on one image's own loss close part of that "amortisation gap" (Campos et al. 2019,
Yang et al. 2020). The decoder is untouched, so a refined stream is an ordinary stream of the same
model: any decoder of that version reads it, and `?effort=` is an encoder-only choice, like
`cwebp -m` or `avifenc --speed`.

Rounding has no useful gradient, and a straight-through estimator for the rate moves latents the
wrong way (measured: it costs bits). Stochastic Gumbel annealing (SGA, Yang et al. 2020) replaces
round(v) by a random soft choice between floor(v) and ceil(v), each weighted by how close v is to it
(logits −atanh(distance)/τ), sampled with Gumbel-softmax at temperature τ; τ anneals from 0.5
towards 0 so the relaxed values end at the integers the coder will use. Adam with a cosine-decayed
step moves y; z is recomputed from y at each step (rounded straight-through), as the encoder will.

Everything here is TensorFlow graph code with a bounded loop, so it exports inside a SavedModel
signature: the service runs it without model code. The noise is stateless and seeded by the step,
so the same image, quality and effort give the same stream on every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

#: Adam's step in latent units (the quantiser's bin is 1) at the start of the cosine decay.
LEARNING_RATE = 0.02
#: SGA temperature: τ_t = max(TAU_START · exp(−TAU_DECAY · t / T), TAU_MIN) over a run of T steps.
TAU_START, TAU_DECAY, TAU_MIN = 0.5, 3.0, 0.05
_BETA1, _BETA2, _EPSILON = 0.9, 0.999, 1e-8
_SEED = 20201102

#: loss(y, τ [B], seed [2]) → per-image loss [B]; each image's loss may depend on its own latents only.
LossFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def annealed_round(values: tf.Tensor, tau: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """SGA's relaxed rounding of `values` ([B, ...]) at temperature `tau` ([B], per image): a
    differentiable random mix of floor and ceil that concentrates on the nearer one as τ → 0."""
    tau = tf.reshape(tau, [-1] + [1] * (values.shape.rank - 1))
    low = tf.stop_gradient(tf.floor(values))
    eps = 1e-5
    logit_low = -tf.atanh(tf.clip_by_value(values - low, -1.0 + eps, 1.0 - eps)) / tau
    logit_high = -tf.atanh(tf.clip_by_value(low + 1.0 - values, -1.0 + eps, 1.0 - eps)) / tau
    uniform = tf.random.stateless_uniform(tf.concat([tf.shape(values), [2]], 0), seed, 1e-9, 1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    logits = (tf.stack([logit_low, logit_high], axis=-1) + gumbel) / tau[..., None]
    weights = tf.nn.softmax(logits, axis=-1)
    return low + weights[..., 1]


def schedule(step: tf.Tensor, steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(learning rate, τ) per image [B] at `step` of each image's own run of `steps` [B]."""
    total = tf.maximum(tf.cast(steps, tf.float32), 1.0)
    progress = tf.minimum(tf.cast(step, tf.float32) / total, 1.0)
    rate = LEARNING_RATE * 0.5 * (1.0 + tf.cos(math.pi * progress))
    tau = tf.maximum(TAU_START * tf.exp(-TAU_DECAY * progress), TAU_MIN)
    return rate, tau


def refine(loss: LossFn, y: tf.Tensor, steps: tf.Tensor, max_steps: int) -> tf.Tensor:
    """y [B, h, w, M] after `steps` [B] (each clipped to [0, max_steps]) Adam steps on `loss`; an image
    with 0 steps keeps its latents exactly. A tf.while_loop: one graph whatever the step count."""
    steps = tf.clip_by_value(tf.cast(steps, tf.int32), 0, max_steps)
    longest = tf.reduce_max(tf.concat([steps, [0]], 0))

    def body(t, y, m, v):
        rate, tau = schedule(t, steps)
        with tf.GradientTape() as tape:
            tape.watch(y)
            total = tf.reduce_sum(loss(y, tau, tf.stack([_SEED, t])))
        grad = tape.gradient(total, y)
        m = _BETA1 * m + (1.0 - _BETA1) * grad
        v = _BETA2 * v + (1.0 - _BETA2) * tf.square(grad)
        count = tf.cast(t + 1, tf.float32)
        update = (m / (1.0 - _BETA1**count)) / (tf.sqrt(v / (1.0 - _BETA2**count)) + _EPSILON)
        active = (t < steps)[:, None, None, None]  # tf.where: an image past its steps keeps y exactly
        return t + 1, tf.where(active, y - rate[:, None, None, None] * update, y), m, v

    zeros = tf.zeros_like(y)
    _, y, _, _ = tf.while_loop(lambda t, *_: t < longest, body, (tf.constant(0), y, zeros, zeros),
                               maximum_iterations=max_steps)
    return y
