"""The hand-written PNG writer: every output decodes with Pillow to exactly the pixels written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service.inference import imaging
from service.inference.png import encode_png

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([None, 1, 3]))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), shape=shapes)
def test_round_trips_through_pillow(data, shape) -> None:
    height, width, channels = shape
    dims = (height, width) if channels is None else (height, width, channels)
    pixels = data.draw(arrays(np.uint8, dims))
    image = Image.open(io.BytesIO(encode_png(pixels)))
    image.load()  # also verifies every chunk CRC
    assert image.format == "PNG" and image.mode == ("RGB" if channels == 3 else "L")
    np.testing.assert_array_equal(np.asarray(image), pixels.reshape(height, width, -1).squeeze(-1)
                                  if channels != 3 else pixels)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)])
def test_refuses_what_it_cannot_write(bad) -> None:
    with pytest.raises(ValueError):
        encode_png(bad)


def test_service_uses_it_for_small_images_and_pillow_for_big_ones() -> None:
    rng = np.random.default_rng(0)
    for side in (28, 300):  # below and above FAST_PNG_MAX_PIXELS
        pixels = rng.random((side, side, 3)).astype(np.float32)
        data = imaging.encode_image(pixels, "png")
        assert (data == encode_png(imaging.to_uint8(pixels))) == (side * side <= imaging.FAST_PNG_MAX_PIXELS)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), imaging.to_uint8(pixels))
