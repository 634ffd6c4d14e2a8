"""`lower_bound`: max(x, bound) whose gradient still flows when it would push x back above the bound.

A plain `tf.maximum` has zero gradient below the bound, so a parameter that falls under it can never
recover. This is TFC's `lower_bound` op (tensorflow_compression/python/ops/math_ops.py): the gradient
passes if x is above the bound or if the update would move x up (gradient descent on -grad).
Use it only while training; coding paths use `tf.maximum`, which computes the same forward value and
keeps custom gradients out of exported SavedModels.
"""

from __future__ import annotations

import tensorflow as tf


@tf.custom_gradient
def _lower_bound(x: tf.Tensor, bound: tf.Tensor):
    def grad(dy: tf.Tensor):
        pass_through = tf.logical_or(x >= bound, dy < 0)
        return tf.where(pass_through, dy, tf.zeros_like(dy)), None

    return tf.maximum(x, bound), grad


def lower_bound(x: tf.Tensor, bound: float | tf.Tensor, training: bool = True) -> tf.Tensor:
    bound = tf.cast(bound, x.dtype)
    if training:
        return _lower_bound(x, tf.broadcast_to(bound, tf.shape(x)))
    return tf.maximum(x, bound)
