"""Transposed convolutions rewritten as conv + depth_to_space compute the same function."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.layers.subpixel import run_sequential, subpixel_deconv


@pytest.mark.parametrize(("kernel", "stride", "size"), [(5, 2, 7), (3, 2, 6), (4, 2, 5), (5, 1, 6)])
def test_subpixel_matches_the_transposed_convolution(kernel: int, stride: int, size: int) -> None:
    keras.utils.set_random_seed(kernel * 10 + stride)
    layer = keras.layers.Conv2DTranspose(5, kernel, strides=stride, padding="same", activation="relu")
    x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    expected = layer(x).numpy()
    np.testing.assert_allclose(subpixel_deconv(layer, x).numpy(), expected, atol=1e-5)


def test_a_synthesis_stack_runs_the_same() -> None:
    from training.layers.gdn import GDN

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.layers.Conv2DTranspose(8, 5, 2, padding="same"), GDN(inverse=True),
                              keras.layers.Conv2DTranspose(3, 5, 2, padding="same")])
    y = np.random.default_rng(1).normal(size=(1, 4, 6, 12)).astype(np.float32)
    expected = model(y).numpy()
    np.testing.assert_allclose(run_sequential(model, y).numpy(), expected, atol=1e-4)
