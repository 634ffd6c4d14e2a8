"""training/layers/checkerboard.py: the anchors/rest split packs and unpacks exactly."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.layers import checkerboard


def test_pack_takes_each_half_and_unpack_restores_the_grid() -> None:
    grid = np.arange(2 * 4 * 6 * 3, dtype=np.int32).reshape(2, 4, 6, 3)
    anchors = checkerboard.pack(tf.constant(grid), checkerboard.ANCHORS).numpy()
    rest = checkerboard.pack(tf.constant(grid), checkerboard.REST).numpy()
    assert anchors.shape == rest.shape == (2, 4, 3, 3)
    mask = checkerboard.anchor_mask(tf.constant(grid)).numpy()[0, :, :, 0].astype(bool)
    assert mask[0, 0] and not mask[0, 1] and mask[1, 1] and not mask[1, 0]
    for i in range(4):  # row by row, left to right: the positions the mask picks, in order
        np.testing.assert_array_equal(anchors[:, i], grid[:, i][:, mask[i]])
        np.testing.assert_array_equal(rest[:, i], grid[:, i][:, ~mask[i]])
    np.testing.assert_array_equal(checkerboard.unpack(tf.constant(anchors), tf.constant(rest)).numpy(), grid)
    only = checkerboard.unpack(tf.constant(anchors)).numpy()
    np.testing.assert_array_equal(only, grid * mask[None, :, :, None])


def test_fixed_point_values_survive_exactly() -> None:
    values = tf.constant(np.random.default_rng(0).integers(-2**20, 2**20, (1, 3, 4, 2)) * 2.0**-8, tf.float64)
    halves = [checkerboard.pack(values, h) for h in (checkerboard.ANCHORS, checkerboard.REST)]
    np.testing.assert_array_equal(checkerboard.unpack(*halves).numpy(), values.numpy())
