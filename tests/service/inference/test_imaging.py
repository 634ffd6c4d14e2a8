"""Pillow decoding under limits, mode/channel conversion, size policies, output encoding (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from service_helpers import noise_image, png_header_claiming, to_bytes

from contract.card import InputSpec
from service.inference import heatmap, imaging
from service.inference.errors import (
    CorruptImage,
    EmptyBody,
    ImageSizeRejected,
    TooManyPixels,
    UnsupportedImage,
)

FIXED = InputSpec(height=28, width=28, channels=1, size_policy="resize")
ANY = InputSpec(channels=3, any_size=True, size_multiple=16, size_policy="pad")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
@pytest.mark.parametrize("channels", [1, 3])
def test_formats_decode_to_floats(fmt: str, channels: int) -> None:
    data = to_bytes(noise_image(12, 17, channels), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    image = imaging.read_image(data, channels=3, max_pixels=10_000)
    assert image.pixels.shape == (12, 17, 3) and image.pixels.dtype == np.float32
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    assert image.channels == (3 if fmt == "WEBP" else channels)  # WebP has no grey mode
    assert image.format == fmt


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_service_keeps_uploads_narrow(fmt: str, channels: int) -> None:
    """What the service holds per upload: uint8 in the upload's own channels (a float copy in the
    model's channels is made only at the model's size), the same values `read_image` gives as floats."""
    data = to_bytes(noise_image(12, 17, channels), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    image = imaging.decode_image(imaging.open_image(data, 10_000), 3)
    own = 3 if fmt == "WEBP" else channels
    assert image.pixels.shape == (12, 17, own) and image.pixels.dtype == np.uint8 and image.channels == own
    np.testing.assert_array_equal(imaging.to_float(image.pixels, 3), imaging.read_image(data, 3, 10_000).pixels)


def test_lossless_png_values_are_exact() -> None:
    raw = noise_image(5, 6, 3)
    image = imaging.read_image(to_bytes(raw), channels=3, max_pixels=100)
    np.testing.assert_array_equal(imaging.to_uint8(image.pixels), raw)


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 2:, 3] = 255
    image = imaging.read_image(to_bytes(rgba), channels=3, max_pixels=100)
    np.testing.assert_allclose(image.pixels[:, :2], 1.0)  # white
    np.testing.assert_allclose(image.pixels[:, 2:], [[[1.0, 0.0, 0.0]] * 2] * 4)


def test_palette_and_grey_palette() -> None:
    colour = imaging.read_image(to_bytes(noise_image(6, 6, 3), mode="P"), channels=3, max_pixels=100)
    assert colour.channels == 3
    grey = Image.fromarray(noise_image(6, 6)).convert("P")  # a palette of greys
    buffer = io.BytesIO()
    grey.save(buffer, "PNG")
    assert imaging.read_image(buffer.getvalue(), channels=1, max_pixels=100).channels == 1


def test_sixteen_bit_grey_keeps_precision() -> None:
    values = np.array([[0, 1000, 65535]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    image = imaging.read_image(buffer.getvalue(), channels=1, max_pixels=100)
    np.testing.assert_allclose(image.pixels[0, :, 0], values[0] / 65535.0, atol=1e-6)
    narrow = imaging.decode_image(imaging.open_image(buffer.getvalue(), 100), 1).pixels
    assert narrow.dtype == np.uint16  # 2 bytes per pixel in the service, not 4
    assert imaging.to_uint8(narrow)[0, :, 0].tolist() == [0, 4, 255]


def test_channel_matching() -> None:
    rgb = np.random.default_rng(0).random((3, 3, 3)).astype(np.float32)
    grey = imaging.match_channels(rgb, 1)
    np.testing.assert_allclose(grey[..., 0], rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    assert imaging.match_channels(grey, 3).shape == (3, 3, 3)


def test_limits_and_bad_inputs() -> None:
    with pytest.raises(EmptyBody):
        imaging.read_image(b"", 1, 100)
    with pytest.raises(UnsupportedImage):
        imaging.read_image(b"not an image at all", 1, 100)
    with pytest.raises(UnsupportedImage):
        imaging.read_image(to_bytes(noise_image(4, 4), "GIF"), 1, 100)
    with pytest.raises(TooManyPixels):  # from the header, before any pixel is decoded
        imaging.read_image(png_header_claiming(2000, 2000), 1, max_pixels=1_000_000)
    with pytest.raises(TooManyPixels):  # Pillow's own decompression-bomb guard, also a 413
        imaging.read_image(png_header_claiming(100_000, 100_000), 1, max_pixels=10**12)
    png = to_bytes(noise_image(20, 20))
    with pytest.raises(CorruptImage):
        imaging.read_image(png[: len(png) // 2], 1, 1000)


def test_size_plans() -> None:
    assert imaging.plan_size(28, 28, FIXED).action == "none"
    resized = imaging.plan_size(40, 30, FIXED)
    assert (resized.action, resized.model_height, resized.model_width) == ("resized", 28, 28)
    with pytest.raises(ImageSizeRejected):
        imaging.plan_size(40, 30, InputSpec(height=28, width=28, channels=1, size_policy="reject"))
    pad_fixed = InputSpec(height=28, width=28, channels=1, size_policy="pad")
    assert imaging.plan_size(20, 28, pad_fixed).action == "padded"
    with pytest.raises(ImageSizeRejected):
        imaging.plan_size(29, 28, pad_fixed)
    padded = imaging.plan_size(17, 32, ANY)
    assert (padded.action, padded.model_height, padded.model_width) == ("padded", 32, 32)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), multiple=st.sampled_from([1, 4, 16, 64]))
def test_pad_then_crop_is_identity(h: int, w: int, multiple: int) -> None:
    spec = InputSpec(channels=1, any_size=True, size_multiple=multiple, size_policy="pad")
    pixels = np.random.default_rng(h * 100 + w).random((h, w, 1)).astype(np.float32)
    plan = imaging.plan_size(h, w, spec)
    model_input = imaging.to_model(pixels, plan)
    assert model_input.shape[0] % multiple == 0 and model_input.shape[1] % multiple == 0
    assert np.array_equal(model_input[h - 1, -1], pixels[h - 1, -1])  # edge replication
    np.testing.assert_array_equal(imaging.from_model(model_input, plan), pixels)


def test_resize_round_trip_shape() -> None:
    plan = imaging.plan_size(45, 33, FIXED)
    pixels = np.random.default_rng(0).random((45, 33, 1)).astype(np.float32)
    small = imaging.to_model(pixels, plan)
    assert small.shape == (28, 28, 1) and imaging.from_model(small, plan).shape == (45, 33, 1)


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("webp", "WEBP"), ("jpeg", "JPEG")])
def test_encode_image(fmt: str, pil: str) -> None:
    pixels = np.random.default_rng(0).random((9, 7, 3)).astype(np.float32)
    decoded = Image.open(io.BytesIO(imaging.encode_image(pixels, fmt)))
    assert decoded.format == pil and decoded.size == (7, 9)
    if fmt in ("png", "webp"):  # lossless
        np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), imaging.to_uint8(pixels))


def test_heatmap_and_psnr() -> None:
    error = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    rgb = heatmap.heatmap(error)
    assert rgb.shape == (2, 2, 3) and rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 0].tolist() == [1, 1, 1]
    mse, psnr = imaging.mse_psnr(np.zeros((2, 2, 1)), np.full((2, 2, 1), 0.1))
    assert mse == pytest.approx(0.01) and psnr == pytest.approx(20.0)
    assert imaging.mse_psnr(np.ones((2, 2, 1)), np.ones((2, 2, 1))) == (0.0, None)
