"""Property tests of image decoding (no server): random bytes, truncations, bit flips and headers
claiming huge sizes, in every accepted format, end in a ServiceError with a 4xx status (what the
service answers), never in another exception, and never decode a claimed size over the pixel limit."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import noise_image, to_bytes

from service.inference import imaging
from service.inference.errors import ServiceError, TooManyPixels

MAX_PIXELS = 100_000
# Pillow warns between 1x and 2x its limit, then our own check refuses: the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
FORMATS = {
    "PNG": {}, "JPEG": {"quality": 90}, "WEBP": {"lossless": True}, "BMP": {}, "TIFF": {},
    "TIFF-deflate": {"compression": "tiff_adobe_deflate"}, "GIF": {},
}
MAGICS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM", b"II*\x00", b"MM\x00*",
          b"GIF89a"]


def _sample(fmt: str, channels: int, seed: int) -> bytes:
    name = fmt.split("-")[0]
    return to_bytes(noise_image(9 + seed % 7, 11 + seed % 5, channels, seed), name, **FORMATS[fmt])


SAMPLES = {(fmt, c): _sample(fmt, c, i) for i, fmt in enumerate(FORMATS) for c in (1, 3)}


def _read(data: bytes, channels: int = 3) -> imaging.SourceImage | None:
    """Decode like the service; the only acceptable failure is a 4xx ServiceError, fast."""
    started = time.perf_counter()
    try:
        image = imaging.read_image(data, channels, MAX_PIXELS)
    except ServiceError as exc:
        assert 400 <= exc.status < 500, exc
        return None
    finally:
        assert time.perf_counter() - started < 2.0
    assert image.height * image.width <= MAX_PIXELS
    assert image.pixels.dtype == np.float32 and image.pixels.shape[-1] == channels
    assert np.isfinite(image.pixels).all() and 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    return image


@pytest.fixture(autouse=True, scope="module")
def _pillow_limit():
    imaging.configure_pillow(MAX_PIXELS)  # what create_app does with the same setting
    yield


def test_samples_decode() -> None:
    for (fmt, channels), data in SAMPLES.items():
        if fmt != "GIF":
            assert _read(data, channels) is not None, fmt


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=400), st.sampled_from([1, 3]))
def test_random_bytes(prefix: bytes, data: bytes, channels: int) -> None:
    _read(prefix + data, channels)


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_truncations(key: tuple[str, int], data: st.DataObject) -> None:
    raw = SAMPLES[key]
    _read(raw[: data.draw(st.integers(0, len(raw) - 1))], key[1])


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_bit_flips_and_byte_edits(key: tuple[str, int], data: st.DataObject) -> None:
    raw = bytearray(SAMPLES[key])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        else:
            raw[i] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    _read(bytes(raw), key[1])


# ---- headers claiming huge sizes (forged, otherwise well-formed) -------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _bmp(width: int, height: int, bits: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\x00" * 64


def _tiff(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1), (279, 4, 1, 64)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, count, value, 0)
        for tag, kind, count, value in entries
    ) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def _webp(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)  # VP8L: 14-bit sizes, at most 16384 x 16384
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


big = st.integers(1, (1 << 31) - 1)


@FUZZ
@given(big, big, st.sampled_from([(8, 0), (8, 2), (16, 2), (1, 0), (8, 6)]), st.binary(max_size=64))
def test_png_claiming_any_size(width: int, height: int, mode: tuple[int, int], junk: bytes) -> None:
    """Raw zeros compress ~1000:1, so a PNG this small may claim gigapixels: refused from the header."""
    idat = zlib.compress(b"\x00" * 4096 + junk, 9)
    image = _read(_png(width, height, mode[0], mode[1], idat))
    if width * height > MAX_PIXELS:
        assert image is None


@FUZZ
@given(st.integers(-(1 << 31), (1 << 31) - 1), st.integers(-(1 << 31), (1 << 31) - 1), st.sampled_from([1, 8, 24, 32]))
def test_bmp_claiming_any_size(width: int, height: int, bits: int) -> None:
    image = _read(_bmp(width, height, bits))
    if abs(width * height) > MAX_PIXELS:
        assert image is None


@FUZZ
@given(big, big)
def test_tiff_claiming_any_size(width: int, height: int) -> None:
    image = _read(_tiff(width, height))
    if width * height > MAX_PIXELS:
        assert image is None


@FUZZ
@given(st.integers(1, 16384), st.integers(1, 16384))
def test_webp_claiming_any_size(width: int, height: int) -> None:
    image = _read(_webp(width, height))
    if width * height > MAX_PIXELS:
        assert image is None


def test_decompression_bomb_png_is_refused_before_inflating() -> None:
    """A real bomb: 100 Mpx of zeros (100 MB inflated) in a ~100 KB valid PNG: refused from the
    header in milliseconds, before a byte is inflated."""
    side = 10_000
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one grey row
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    bomb = _png(side, side, 8, 0, idat)
    assert len(bomb) < 200_000
    started = time.perf_counter()
    with pytest.raises(TooManyPixels):
        imaging.read_image(bomb, 1, MAX_PIXELS)
    assert time.perf_counter() - started < 0.5
