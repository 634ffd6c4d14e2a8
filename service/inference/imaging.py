"""Pillow in and out: decode uploads under limits, convert them to what a model takes, encode results.

Why each step is here: the pixel limit is checked from the header *before* pixels are decoded (so a
small file claiming a huge size costs nothing), every mode Pillow knows is reduced to grey or RGB floats
in [0, 1] (alpha composited on white, palettes expanded, 16-bit kept at full precision), and the size
policy of the model card (pad / resize / reject) is applied here and undone here after decoding.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.contract.card import InputSpec
from service.inference.errors import (
    CorruptImage,
    EmptyBody,
    ImageSizeRejected,
    TooManyPixels,
    UnsupportedImage,
)
from service.inference.png import encode_png

#: Pillow format names we accept (MPO is the multi-picture JPEG that phone cameras write; DIB is BMP).
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "TIFF"})
#: What `Image.open` tries first, commonest first (the JPEG plugin opens MPO too); anything else (DIB,
#: GIF, ...) is opened on a second try, so the accepted set is still `ACCEPTED_FORMATS`.
_OPEN_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
OutputFormat = Literal["png", "webp", "jpeg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
SizeAction = Literal["none", "padded", "resized"]

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Up to this many pixels, PNG results come from `png.encode_png` (no row filters, ~6× less time than
#: Pillow for a digit); bigger ones from Pillow, whose adaptive row filters compress photos better.
FAST_PNG_MAX_PIXELS = 128 * 128


@dataclass(frozen=True)
class SourceImage:
    """An uploaded image as floats in [0, 1], already reduced to the model's channel count."""

    pixels: np.ndarray  # float32 [H, W, model channels]
    channels: int  # the upload's own channels: 1 (grey) or 3 (colour)
    format: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class SizePlan:
    """How an image of `height`×`width` maps onto the model input (and back)."""

    height: int
    width: int
    model_height: int
    model_width: int
    policy: str
    action: SizeAction


def configure_pillow(max_pixels: int) -> None:
    """Align Pillow's decompression-bomb guard with our limit, so the operator's setting governs: our
    own header check refuses first (413), and Pillow never refuses an image the operator allowed."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def read_image(data: bytes, channels: int, max_pixels: int) -> SourceImage:
    """Decode `data` (any accepted format, any mode) to float pixels with `channels` channels."""
    return decode_image(open_image(data, max_pixels), channels)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parse only the header: format and size checked (pixel limit before any pixel is decoded)."""
    if not data:
        raise EmptyBody("the request body holds no image bytes")
    try:
        try:
            image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)  # only our plugins try: ~20% faster
        except UnidentifiedImageError:
            image = Image.open(io.BytesIO(data))  # another format (GIF, DIB, ...): named below, or no image
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"image is too large to decode safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedImage("the bytes are not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF)") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"image format {image.format} is not supported; send PNG, JPEG, WebP, BMP or TIFF")
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImage(f"image header claims an empty size {width}x{height}")
    if width * height > max_pixels:
        raise TooManyPixels(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return image


def decode_image(image: Image.Image, channels: int) -> SourceImage:
    """Decode the pixels of an `open_image` result (the costly part: big images go to a thread)."""
    fmt = str(image.format)
    try:
        image.load()
        if image.format != "PNG" or "exif" in image.info:  # a PNG's eXIf chunk is in info once loaded
            ImageOps.exif_transpose(image, in_place=True)  # phone photos: apply the EXIF orientation
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"image is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise CorruptImage(f"{fmt} data is truncated or corrupt: {exc}") from exc
    pixels, source_channels = _to_float(image)
    return SourceImage(match_channels(pixels, channels), source_channels, fmt)


def _to_float(image: Image.Image) -> tuple[np.ndarray, int]:
    mode = image.mode
    if mode in _WIDE_MODES:
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)[..., None], 1
    if mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[..., None], 1
    grey = mode in _GREY_MODES or (mode in {"P", "PA"} and _grey_palette(image))
    transparent = "A" in mode or "a" in mode or "transparency" in image.info
    try:
        if transparent:
            arr = np.asarray(image.convert("LA" if grey else "RGBA"), dtype=np.float32) / 255.0
            colour, alpha = arr[..., :-1], arr[..., -1:]
            arr = colour * alpha + (1.0 - alpha)  # composite on white
        elif mode in ("L", "RGB"):  # already what we want: no converted copy
            arr = np.asarray(image, dtype=np.float32) / 255.0
        else:
            arr = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    except (ValueError, OSError) as exc:
        raise UnsupportedImage(f"image mode {mode} cannot be converted to grey or RGB") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr.astype(np.float32, copy=False), 1 if grey else 3


def _grey_palette(image: Image.Image) -> bool:
    palette = image.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool(np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))


def match_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Grey → RGB by repetition, RGB → grey by ITU-R 601 luma (what Pillow's "L" uses)."""
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if have == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    if have == 3 and channels == 1:
        return (pixels @ _LUMA)[..., None].astype(np.float32)
    raise ValueError(f"cannot map {have} channels to {channels}")


def plan_size(height: int, width: int, spec: InputSpec) -> SizePlan:
    """Decide pad / resize / reject for one image size; the same plan crops or resizes back."""
    if spec.any_size:
        m = spec.size_multiple
        mh, mw = math.ceil(height / m) * m, math.ceil(width / m) * m
        action: SizeAction = "none" if (mh, mw) == (height, width) else "padded"
        return SizePlan(height, width, mh, mw, "pad", action)
    mh, mw = int(spec.height), int(spec.width)  # type: ignore[arg-type]
    if (height, width) == (mh, mw):
        return SizePlan(height, width, mh, mw, spec.size_policy, "none")
    if spec.size_policy == "resize":
        return SizePlan(height, width, mh, mw, "resize", "resized")
    if spec.size_policy == "pad" and height <= mh and width <= mw:
        return SizePlan(height, width, mh, mw, "pad", "padded")
    raise ImageSizeRejected(
        f"the model takes {mw}x{mh} images and its size policy is {spec.size_policy!r}; got {width}x{height}"
    )


def to_model(pixels: np.ndarray, plan: SizePlan) -> np.ndarray:
    """Pad by edge replication or resize `pixels` [H, W, C] to the model's input size."""
    if plan.action == "padded":
        pad = ((0, plan.model_height - plan.height), (0, plan.model_width - plan.width), (0, 0))
        return np.pad(pixels, pad, mode="edge")
    if plan.action == "resized":
        return resize(pixels, plan.model_height, plan.model_width)
    return pixels


def from_model(pixels: np.ndarray, plan: SizePlan) -> np.ndarray:
    """Inverse of `to_model` for a model output [h, w, C] (or an error map [h, w, 1])."""
    if plan.action == "padded":
        return pixels[: plan.height, : plan.width]
    if plan.action == "resized":
        return resize(pixels, plan.height, plan.width)
    return pixels


def valid_region(pixels: np.ndarray, plan: SizePlan) -> np.ndarray:
    """The part of a model-sized array that holds image, not padding (what PSNR is measured on)."""
    return pixels[: plan.height, : plan.width] if plan.action == "padded" else pixels


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of float pixels [H, W, C], channel by channel in Pillow's float mode."""
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32)).resize(
            (width, height), Image.Resampling.BICUBIC
        ))
        for c in range(pixels.shape[-1])
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def encode_image(pixels: np.ndarray, fmt: OutputFormat = "png") -> bytes:
    """Float pixels [H, W, 1|3] in [0, 1] → PNG, lossless WebP or JPEG (quality 95) bytes."""
    u8 = to_uint8(pixels)
    if fmt == "png" and u8.shape[0] * u8.shape[1] <= FAST_PNG_MAX_PIXELS:
        return encode_png(u8)
    image = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "webp":
        image.save(buffer, format="WEBP", lossless=True)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buffer.getvalue()


def heatmap(error_map: np.ndarray) -> np.ndarray:
    """Per-pixel error [H, W] → RGB floats on a black-red-yellow-white ramp, scaled to this image's max."""
    peak = float(error_map.max())
    t = np.clip(error_map / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(error_map)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)
    return rgb.astype(np.float32)


def heatmap_overlay(image: np.ndarray, error_map: np.ndarray, strength: float = 0.8) -> np.ndarray:
    """The heat map laid over the image: a dimmed grey copy of `image` [H, W, C], tinted by the ramp
    where the error is large (alpha ∝ error / this image's max), so one look shows *where* it is odd."""
    grey = image[..., :1] if image.shape[-1] == 1 else (image @ _LUMA)[..., None]
    base = np.repeat(0.6 * grey, 3, axis=-1)
    peak = float(error_map.max())
    alpha = (np.clip(error_map / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(error_map))[..., None] * strength
    return np.clip(base * (1 - alpha) + heatmap(error_map) * alpha, 0.0, 1.0).astype(np.float32)


def mse_psnr(reference: np.ndarray, output: np.ndarray) -> tuple[float, float | None]:
    """MSE of two float images in [0, 1] and PSNR in dB (None when they are identical)."""
    diff = np.subtract(reference, output, dtype=np.float64).ravel()
    mse = float(diff @ diff) / max(diff.size, 1)  # one pass, float64 sums (3x less time than mean(square))
    return mse, (10.0 * math.log10(1.0 / mse) if mse > 0 else None)
