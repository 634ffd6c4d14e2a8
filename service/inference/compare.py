"""Our stream against the classic codecs at the same byte count: JPEG, WebP and AVIF through Pillow.

For each codec, `fit` finds the largest quality whose file fits in `target` bytes by bisection over the
codec's integer quality scale (its files grow with quality, as far as a search needs: the answer is
checked at both ends, so the result is a quality that fits and one step above that does not, or the
scale's top). The fits are decoded again with Pillow and measured like our reconstruction: PSNR (and
MS-SSIM, `service.inference.msssim`, where the image is big enough and allowed) on 8-bit pixels against
the upload, at its size and channels.

Work is bounded by the caller: an image of at most `MAX_COMPARE_PIXELS`, about log2(101) + 1 encodes
per codec, all in one worker thread (`compare`), never on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, features

from service.inference import imaging, msssim

#: Largest image (width × height) the comparison takes: every codec encodes it about eight times.
MAX_COMPARE_PIXELS = 1024 * 1024

CodecName = Literal["jpeg", "webp", "avif"]
CODECS: tuple[CodecName, ...] = ("jpeg", "webp", "avif")


@dataclass(frozen=True)
class Codec:
    """One classic codec as Pillow writes it: its quality scale and the options used at every quality."""

    name: CodecName
    pil_format: str
    media_type: str
    min_quality: int
    max_quality: int
    options: dict[str, Any]
    settings: str  # the options in words, for the answer
    feature: tuple[str, str]  # what `PIL.features` must report for Pillow to write it


SPECS: dict[CodecName, Codec] = {
    "jpeg": Codec("jpeg", "JPEG", "image/jpeg", 1, 100, {"optimize": True},
                  "Pillow JPEG (libjpeg), optimised Huffman tables, 4:2:0 chroma", ("codec", "jpg")),
    "webp": Codec("webp", "WEBP", "image/webp", 0, 100, {"method": 4},
                  "Pillow WebP (libwebp), lossy, method 4", ("module", "webp")),
    # speed 8, not Pillow's default 6: about 3x faster for 2-8% more bytes at the same quality
    "avif": Codec("avif", "AVIF", "image/avif", 0, 100, {"speed": 8},
                  "Pillow AVIF (libavif), speed 8, 4:2:0 chroma", ("module", "avif")),
}


def available(name: CodecName) -> bool:
    """Whether this Pillow can write the codec (AVIF needs Pillow >= 11.3 built with libavif)."""
    kind, feature = SPECS[name].feature
    try:
        return bool(features.check_codec(feature) if kind == "codec" else features.check_module(feature))
    except ValueError:  # a feature this Pillow does not know of at all
        return False


def encode(image: Image.Image, codec: Codec, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=codec.pil_format, quality=quality, **codec.options)
    return buffer.getvalue()


@dataclass(frozen=True)
class Fit:
    """A codec's answer to "at most `target` bytes": the file at the largest quality that fits, or, when
    none does, the file at its lowest quality (`fits` False: the smallest it can go)."""

    codec: CodecName
    quality: int
    data: bytes
    fits: bool
    at_max_quality: bool
    next_bytes: int | None  # the file one quality step up (the proof that `quality` is the largest); None at the top
    encodes: int  # files written by the search
    sizes: dict[int, int] = field(repr=False)  # every quality tried → its bytes


def fit(image: Image.Image, codec: Codec, target: int) -> Fit:
    """Bisection for the largest quality whose file is at most `target` bytes. Invariant: `low` fits (or
    is one below the scale), `high` does not (or is one above it); each is a quality actually encoded."""
    low, high = codec.min_quality - 1, codec.max_quality + 1
    sizes: dict[int, int] = {}
    files: dict[int, bytes] = {}
    while high - low > 1:
        mid = (low + high) // 2
        data = encode(image, codec, mid)
        sizes[mid] = len(data)
        if len(data) <= target:
            low, files[mid] = mid, data
        else:
            high = mid
            if mid == codec.min_quality:
                files[mid] = data  # nothing fits: this is the smallest file the codec makes
    if low < codec.min_quality:  # even the lowest quality is over the target
        quality = codec.min_quality
        return Fit(codec.name, quality, files[quality], False, False, None, len(sizes), sizes)
    at_max = low == codec.max_quality
    return Fit(codec.name, low, files[low], True, at_max, None if at_max else sizes[low + 1], len(sizes), sizes)


@dataclass(frozen=True)
class Measured:
    mse: float
    psnr: float | None  # None: identical to the upload
    ms_ssim: float | None = None


def measure(reference: np.ndarray, output: np.ndarray, *, with_ms_ssim: bool = False) -> Measured:
    """PSNR (and with `with_ms_ssim` MS-SSIM, `msssim.ms_ssim`: None under its minimum size) of 8-bit
    `output` against 8-bit `reference`, both [H, W, C] with the same channels."""
    mse, psnr = imaging.mse_psnr(reference, output)
    return Measured(mse, psnr, msssim.ms_ssim(reference, output) if with_ms_ssim else None)


def decode(data: bytes, channels: int) -> np.ndarray:
    """A file written by `encode`, back to uint8 [H, W, channels]."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return pixels[..., None] if pixels.ndim == 2 else pixels


@dataclass(frozen=True)
class Entry:
    """One codec in the comparison: its fit and how it measures, or why it is missing."""

    codec: CodecName
    spec: Codec
    fit: Fit | None  # None when this Pillow cannot write the codec
    measured: Measured | None
    reason: str | None = None


@dataclass(frozen=True)
class Comparison:
    reference: np.ndarray  # the upload as uint8 [H, W, C]: what every codec is measured against
    ours: Measured
    entries: list[Entry]
    heatmap: bytes | None  # PNG: our per-pixel error laid over the upload (`heatmap_overlay`)


def reference_pixels(pixels: np.ndarray) -> np.ndarray:
    """The upload as 8-bit pixels in its own channels (16-bit and float uploads rounded to 8 bits)."""
    return imaging.to_uint8(pixels)


def pillow_image(reference: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(reference[..., 0] if reference.shape[-1] == 1 else reference))


#: The RMS error (pixels in [0, 1]) drawn at full colour in the heat map: a fixed scale, so maps at two
#: qualities can be compared by eye (one scaled to its own maximum looks the same at every quality).
HEAT_FULL_SCALE = 32 / 255
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def error_map(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per-pixel RMS error over the channels, pixels in [0, 1]: float32 [H, W]."""
    out = np.empty(reference.shape[:2], np.float32)
    for row in range(0, reference.shape[0], 256):
        a = reference[row : row + 256].astype(np.float32) / 255.0
        b = output[row : row + 256].astype(np.float32) / 255.0
        out[row : row + 256] = np.sqrt(np.mean((a - b) ** 2, axis=-1))
    return out


def heatmap_overlay(reference: np.ndarray, errors: np.ndarray, strength: float = 0.85) -> np.ndarray:
    """The error map over a dimmed grey copy of the upload (uint8 RGB): black-red-yellow-white as the
    RMS error goes from 0 to `HEAT_FULL_SCALE` and beyond, more opaque where it is larger."""
    out = np.empty((*errors.shape, 3), np.uint8)
    for row in range(0, errors.shape[0], 256):
        part = reference[row : row + 256].astype(np.float32) / 255.0
        grey = part if part.shape[-1] == 1 else (part @ _LUMA)[..., None]
        t = np.clip(errors[row : row + 256] / HEAT_FULL_SCALE, 0.0, 1.0)[..., None]
        ramp = np.concatenate([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)
        alpha = t * strength
        out[row : row + 256] = np.rint(np.clip(0.55 * grey * (1 - alpha) + ramp * alpha, 0, 1) * 255).astype(np.uint8)
    return out


def compare(source_pixels: np.ndarray, ours: np.ndarray, target: int, *, codecs: Sequence[CodecName] = CODECS,
            with_heatmap: bool = False, ms_ssim_max_pixels: int = 0) -> Comparison:
    """Everything the comparison computes, in one call for a worker thread: `ours` is our decoded stream
    (uint8 [H, W, C], the upload's size and channels) and `target` its byte count. MS-SSIM for every file
    when the image is `msssim.measurable` within `ms_ssim_max_pixels` (0: never)."""
    reference = reference_pixels(source_pixels)
    if ours.shape != reference.shape:
        raise ValueError(f"our reconstruction is {ours.shape}, the upload {reference.shape}")
    image = pillow_image(reference)
    with_ms_ssim = ms_ssim_max_pixels > 0 and msssim.measurable(*reference.shape[:2], ms_ssim_max_pixels)
    entries = []
    for name in codecs:
        spec = SPECS[name]
        if not available(name):
            entries.append(Entry(name, spec, None, None, f"this Pillow ({_pillow_version()}) cannot write {spec.pil_format}"))
            continue
        found = fit(image, spec, target)
        decoded = decode(found.data, reference.shape[-1])
        entries.append(Entry(name, spec, found, measure(reference, decoded, with_ms_ssim=with_ms_ssim)))
    heat = None
    if with_heatmap:
        heat = imaging.encode_image(heatmap_overlay(reference, error_map(reference, ours)), "png")
    return Comparison(reference, measure(reference, ours, with_ms_ssim=with_ms_ssim), entries, heat)


def bpp(size: int, height: int, width: int) -> float:
    return size * 8 / (height * width)


def _pillow_version() -> str:
    import PIL

    return f"Pillow {PIL.__version__}"
