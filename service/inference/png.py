"""PNG writer for the service's own 8-bit results: stdlib zlib + struct, no Pillow on this path.

Why not Pillow here: for the small images this service answers most (a 28×28 digit), `Image.save`
spends ~6× longer in plugin and chunk machinery than the compression itself (bench/serve.py; about a
tenth of the event loop's time per /reconstruct request). What we write is always the simplest PNG -
one IHDR, one IDAT of unfiltered rows, IEND, 8-bit grey or RGB - so the writer is small, and the tests
read every output back with Pillow. Uploads are still *decoded* by Pillow (untrusted input, many
formats); only this trusted, fixed-shape output path is hand-written.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}  # grey, RGB


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(pixels: np.ndarray, level: int = 6) -> bytes:
    """uint8 pixels [H, W], [H, W, 1] or [H, W, 3] → PNG bytes (filter type 0 on every row)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 pixels, not {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in _COLOUR_TYPE or min(pixels.shape[:2]) < 1:
        raise ValueError(f"encode_png takes [H, W, 1|3] pixels, not shape {pixels.shape}")
    height, width, channels = pixels.shape
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # first byte of each row: filter 0 (none)
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + _chunk(
        b"IEND", b""
    )
