"""The checkerboard split of a latent grid (He et al. 2021): anchors where row + column is even, the rest
where it is odd, and each half packed densely as [B, H, W/2, C] so that it is an ordinary latent tensor
for the entropy coder, the bitstream and the service's tiling (its horizontal stride is twice the
grid's). Packing and unpacking multiply by 0/1 and add, so they are exact for integers and for the
fixed-point values (float64) of the integer networks. W must be even: the y grid of a model whose
size multiple is 64 has a multiple of 4 columns."""

from __future__ import annotations

import tensorflow as tf

ANCHORS, REST = 0, 1


def anchor_mask(like: tf.Tensor) -> tf.Tensor:
    """1 at the anchors ((i + j) even), 0 elsewhere, shaped [1, H, W, 1] in `like`'s dtype."""
    shape = tf.shape(like)
    parity = (tf.range(shape[1])[:, None] + tf.range(shape[2])[None, :]) % 2
    return tf.cast(tf.equal(parity, 0), like.dtype)[None, :, :, None]


def _column_pick(rows: tf.Tensor, half: int, dtype: tf.DType) -> tf.Tensor:
    """[1, H, 1, 2, 1]: which of each row's column pairs holds `half` (anchors sit at even columns of
    even rows and odd columns of odd rows)."""
    return tf.one_hot((tf.range(rows) + half) % 2, 2, dtype=dtype)[None, :, None, :, None]


def pack(grid: tf.Tensor, half: int) -> tf.Tensor:
    """[B, H, W, C] → the `half` (ANCHORS or REST) of it, [B, H, W/2, C]."""
    shape = tf.shape(grid)
    pairs = tf.reshape(grid, [shape[0], shape[1], shape[2] // 2, 2, shape[3]])
    return tf.reduce_sum(pairs * _column_pick(shape[1], half, grid.dtype), axis=3)


def unpack(anchors: tf.Tensor, rest: tf.Tensor | None = None) -> tf.Tensor:
    """The two packed halves back into one [B, H, W, C] grid (`rest` None: zeros there)."""
    shape = tf.shape(anchors)
    full = anchors[:, :, :, None, :] * _column_pick(shape[1], ANCHORS, anchors.dtype)
    if rest is not None:
        full = full + rest[:, :, :, None, :] * _column_pick(shape[1], REST, rest.dtype)
    return tf.reshape(full, [shape[0], shape[1], shape[2] * 2, shape[3]])
