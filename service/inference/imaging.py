"""Pillow in and out: decode uploads under limits, convert them to what a model takes, encode results.

Why each step is here: the pixel limit is checked from the header *before* pixels are decoded (so a
small file claiming a huge size costs nothing), every mode Pillow knows is reduced to grey or RGB (alpha
composited on white, palettes expanded, 16-bit kept at full precision), and the size policy of the model
card (pad / resize / reject) is applied here and undone here after decoding.

Memory: an upload is kept in the narrowest dtype that holds it (uint8; uint16 for 16-bit grey; float32
only for float TIFFs), in its own channels, and turns into float32 only at the model's input size (or
tile by tile); outputs turn back into uint8 at the model's size before they are resized to the original.
A 4096² RGB photo is 48 MiB as uint8 and 192 MiB as float32, and a fixed-size model resizing it to 28×28
never needs the float copy at all. Resizes run in the order whose intermediate is smaller (Pillow's one
call goes horizontal first: 28×28 → 1×16,777,216 would build a 28-row intermediate of 470 M pixels).
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from contract import sizing
from contract.card import InputSpec
from contract.sizing import SizePlan
from service.inference.errors import (
    CorruptImage,
    EmptyBody,
    ImageMetadataTooLarge,
    ImageSizeRejected,
    NonFinitePixels,
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

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Up to this many pixels, PNG results come from `png.encode_png` (no row filters, ~6× less time than
#: Pillow for a digit); bigger ones from Pillow, whose adaptive row filters compress photos better.
FAST_PNG_MAX_PIXELS = 128 * 128
#: zlib level of PNG answers above FAST_PNG_MAX_PIXELS: level 1 encodes a photo several times faster than
#: Pillow's default 6 for somewhat more bytes (docs/operators.md, "Photo answers"), and on the links a
#: service answers over, CPU per megapixel is the dearer of the two.
LARGE_PNG_LEVEL = 1
#: Images up to this many pixels are converted on the event loop: for a small image (an MNIST digit) the
#: hop to a worker thread costs more than the work itself (bench/serve.py). Anything bigger runs in a
#: worker thread (`off_loop`), so no request can stall the loop for others.
INLINE_MAX_PIXELS = 64 * 64
#: Rows per step where a whole-image float computation would need several full-size float copies
#: (PSNR, heat-map overlay): memory then follows the chunk, not the image.
CHUNK_ROWS = 256
T = TypeVar("T")


@dataclass(frozen=True)
class SourceImage:
    """An uploaded image as decoded, in its own channels and narrowest dtype (see the module docstring):
    uint8, uint16 (16-bit grey) or float32 in [0, 1] (float TIFF). `to_float` makes model input of it."""

    pixels: np.ndarray  # [H, W, channels]: uint8, uint16 or float32
    channels: int  # the upload's own channels: 1 (grey) or 3 (colour)
    format: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def configure_pillow(max_pixels: int) -> None:
    """Align Pillow's decompression-bomb guard with our limit, so the operator's setting governs: our
    own header check refuses first (413), and Pillow never refuses an image the operator allowed."""
    Image.MAX_IMAGE_PIXELS = max_pixels


async def off_loop(pixels: int, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` inline for work on at most `INLINE_MAX_PIXELS` pixels, else in a worker thread."""
    if pixels <= INLINE_MAX_PIXELS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def read_image(data: bytes, channels: int, max_pixels: int) -> SourceImage:
    """Decode `data` (any accepted format, any mode) to float32 pixels in [0, 1] with `channels` channels:
    what scripts and benchmarks feed a model directly. The service keeps uploads narrow instead
    (`open_image` + `decode_image`)."""
    image = decode_image(open_image(data, max_pixels), channels)
    return SourceImage(to_float(image.pixels, channels), image.channels, image.format)


def _metadata_bomb(exc: Exception) -> bool:
    """Pillow's refusal of a PNG text or ICC chunk that inflates past its limit (a decompression bomb)."""
    text = str(exc)
    return "MAX_TEXT_CHUNK" in text or "text chunks" in text


_METADATA_BOMB = ("PNG metadata (a zTXt, iTXt or iCCP chunk) inflates past Pillow's limit of 1 MiB per chunk "
                  "or 64 MiB in all: refused as a decompression bomb; strip the metadata and send the pixels")


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
    except ValueError as exc:
        if _metadata_bomb(exc):
            raise ImageMetadataTooLarge(_METADATA_BOMB) from exc
        raise UnsupportedImage("the bytes are not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UnsupportedImage("the bytes are not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF)") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"image format {image.format} is not supported; send PNG, JPEG, WebP, BMP or TIFF")
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImage(f"image header claims an empty size {width}x{height}")
    if width * height > max_pixels:
        raise TooManyPixels(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if image.format in ("JPEG", "MPO"):
        _require_jpeg_data(data)
    return image


def decode_image(image: Image.Image, channels: int) -> SourceImage:
    """Decode the pixels of an `open_image` result (the costly part: big images go to a thread).
    `channels` is the model's; the result keeps the upload's own (see `SourceImage`)."""
    fmt = str(image.format)
    try:
        image.load()
        if image.format != "PNG" or "exif" in image.info:  # a PNG's eXIf chunk is in info once loaded
            ImageOps.exif_transpose(image, in_place=True)  # phone photos: apply the EXIF orientation
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"image is too large to decode safely: {exc}") from exc
    except ValueError as exc:
        if _metadata_bomb(exc):
            raise ImageMetadataTooLarge(_METADATA_BOMB) from exc
        raise CorruptImage(f"{fmt} data is truncated or corrupt: {exc}") from exc
    except (OSError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise CorruptImage(f"{fmt} data is truncated or corrupt: {exc}") from exc
    pixels, source_channels = _native(image)
    return SourceImage(pixels, source_channels, fmt)


#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic coded).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _require_jpeg_data(data: bytes) -> None:
    """Refuse a JPEG whose entropy-coded data is too short for the size its frame header claims.

    libjpeg meets the end of the data with a warning, not an error, and fills the rest with grey, so a
    64x64 JPEG whose header was patched to say 4096x4096 "decoded" into a 16 MP grey image (200). Every
    8x8 block of every component costs at least one bit (its DC coefficient's code, in baseline and
    progressive alike), so fewer bytes after the first scan header than blocks / 8 cannot be a whole
    image. And a JPEG whose data never reaches an EOI marker after its first scan was cut off (Pillow
    reports some such cuts and grey-fills others): entropy-coded bytes cannot hold FF D9, since every FF
    in them is stuffed with 00 or is a restart marker, so the first FF D9 after the scan is its end."""
    pos, frame, scan_start = 2, None, -1
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            frame = data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:  # start of scan: entropy-coded data follows its header
            scan_start = pos + 2 + length
            break
        pos += 2 + length
    if scan_start >= 0 and data.find(b"\xff\xd9", scan_start) < 0:
        raise CorruptImage("JPEG data is truncated: the image data ends before its end-of-image marker")
    if frame is None or scan_start < 0 or len(frame) < 6:
        return  # not a layout we can read: Pillow decides
    height, width, count = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
    factors = [(frame[7 + 3 * i] >> 4, frame[7 + 3 * i] & 15) for i in range(count) if 8 + 3 * i <= len(frame)]
    if not factors or height < 1 or width < 1:
        return
    h_max, v_max = max(h for h, _ in factors) or 1, max(v for _, v in factors) or 1
    blocks = sum(math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
                 for h, v in factors)
    available = len(data) - scan_start
    if available * 8 < blocks:
        raise CorruptImage(f"JPEG data is truncated: {available} bytes of image data cannot hold the "
                           f"{width}x{height} image its header claims (at least {math.ceil(blocks / 8)} bytes)")


def _native(image: Image.Image) -> tuple[np.ndarray, int]:
    """Pixels [H, W, 1|3] in the narrowest dtype that holds them, and their channel count."""
    mode = image.mode
    if mode in _WIDE_MODES:
        arr = np.asarray(image)
        if arr.dtype != np.uint16:  # mode I holds 32-bit integers: 16-bit sources, clipped as before
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return arr[..., None], 1
    if mode == "F":
        arr = np.asarray(image, dtype=np.float32)
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise NonFinitePixels(f"float image holds {bad} NaN or infinite pixel value(s); pixels must be finite "
                                  "numbers (values are clipped to [0, 1])")
        return np.clip(arr, 0.0, 1.0)[..., None], 1
    grey = mode in _GREY_MODES or (mode in {"P", "PA"} and _grey_palette(image))
    transparent = "A" in mode or "a" in mode or "transparency" in image.info
    try:
        if transparent:  # composite on white, in Pillow (uint8, no float copy of the image)
            rgba = image.convert("LA" if grey else "RGBA")
            base = Image.new("L" if grey else "RGB", rgba.size, 255 if grey else (255, 255, 255))
            base.paste(rgba.convert("L" if grey else "RGB"), mask=rgba.getchannel("A"))
            arr = np.asarray(base)
        elif mode in ("L", "RGB"):  # already what we want: no converted copy
            arr = np.asarray(image)
        else:
            arr = np.asarray(image.convert("L" if grey else "RGB"))
    except (ValueError, OSError) as exc:
        raise UnsupportedImage(f"image mode {mode} cannot be converted to grey or RGB") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, 1 if grey else 3


def to_float(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Pixels of any stored dtype → float32 in [0, 1] with `channels` channels: what a model takes.
    Call it at the model's size (or per tile), never on a big upload that is about to be resized."""
    if pixels.dtype == np.uint8:
        arr = pixels.astype(np.float32) / 255.0
    elif pixels.dtype == np.uint16:
        arr = pixels.astype(np.float32) / 65535.0
    else:
        arr = np.asarray(pixels, dtype=np.float32)
    return match_channels(arr, channels)


def _grey_palette(image: Image.Image) -> bool:
    palette = image.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool(np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))


def match_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Grey → RGB by repetition, RGB → grey by ITU-R 601 luma (what Pillow's "L" uses). Floats stay
    floats; uint8 stays uint8 (luma by Pillow, no float copy)."""
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if have == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    if have == 3 and channels == 1:
        if pixels.dtype == np.uint8:
            return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).convert("L"))[..., None]
        return (pixels @ LUMA)[..., None].astype(np.float32)
    raise ValueError(f"cannot map {have} channels to {channels}")


def plan_size(height: int, width: int, spec: InputSpec) -> SizePlan:
    """The contract's size plan (`contract.sizing`), a rejected size as a 422."""
    try:
        return sizing.plan_size(height, width, spec)
    except sizing.SizeRejected as exc:
        raise ImageSizeRejected(str(exc)) from exc


def to_model(pixels: np.ndarray, plan: SizePlan) -> np.ndarray:
    """Pad by edge replication or resize `pixels` [H, W, C] to the model's input size (dtype kept)."""
    if plan.action == "padded":
        return sizing.pad_edges(pixels, plan.model_height, plan.model_width)
    if plan.action == "resized":
        return resize(pixels, plan.model_height, plan.model_width)
    return pixels


def model_input(source: SourceImage, plan: SizePlan, channels: int, *, as_float: bool = True) -> np.ndarray:
    """The upload at the model's input size: resized or padded in its own dtype, then float32 with the
    model's `channels` (`as_float=False`: still in its dtype, for a tiled model to convert tile by tile)."""
    sized = to_model(source.pixels, plan)
    return to_float(sized, channels) if as_float else sized


def from_model(pixels: np.ndarray, plan: SizePlan) -> np.ndarray:
    """Inverse of `to_model` for a model output [h, w, C] (or an error map [h, w, 1])."""
    if plan.action == "padded":
        return pixels[: plan.height, : plan.width]
    if plan.action == "resized":
        return resize(pixels, plan.height, plan.width)
    return pixels


def output_image(pixels: np.ndarray, plan: SizePlan, channels: int) -> np.ndarray:
    """A model output (float [h, w, C] in [0, 1], model size) → uint8 [H, W, `channels`] at the original
    size: quantised and channel-matched at the model's size, then resized in uint8 (1 byte per pixel
    and channel at the original size, where floats took 4)."""
    if plan.action == "padded":
        pixels = pixels[: plan.height, : plan.width]
    u8 = match_channels(to_uint8(pixels), channels)
    return resize(u8, plan.height, plan.width) if plan.action == "resized" else u8



def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of pixels [H, W, C]: uint8 in Pillow's 8-bit modes, anything else per channel in
    its float mode (clipped to [0, 1]). The dtype is kept."""
    if pixels.dtype == np.uint8 and pixels.shape[-1] in (1, 3):
        image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels))
        out = np.asarray(_resize(image, width, height))
        return out[..., None] if out.ndim == 2 else out
    scale = 65535.0 if pixels.dtype == np.uint16 else 1.0
    out = np.empty((height, width, pixels.shape[-1]), np.float32)
    for c in range(pixels.shape[-1]):  # one float plane at a time, written in place
        out[..., c] = np.asarray(_resize(Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32)),
                                         width, height))
    np.clip(out, 0.0, scale, out=out)
    return np.rint(out).astype(np.uint16) if pixels.dtype == np.uint16 else out


#: Longest output span one Pillow resize call produces: Pillow precomputes ~48 bytes of filter
#: coefficients per output column (or row), so a 1 x 16,777,216 output asked for 800 MB of them.
_MAX_RESIZE_SPAN = 1 << 16


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Pillow's bicubic resize with memory bounded by the images, not by their shapes:

    - split into its two passes, vertical first, when Pillow's own order (horizontal first) would build
      an intermediate bigger than both ends (a 28-row image widened to 16 M columns: 470 M pixels);
    - an output longer than `_MAX_RESIZE_SPAN` along an axis is made in strips of that many columns
      (or rows), each resampled from its exact source box (Pillow's taps reach past a box, so the strips
      are one whole resize, to a level of 8-bit rounding where a strip starts)."""
    w0, h0 = image.size
    if width * h0 > max(w0 * h0, width * height) and height != h0:
        image, h0 = _resize(image, w0, height), height
    if (width, height) == (w0, h0):
        return image
    if width <= _MAX_RESIZE_SPAN and height <= _MAX_RESIZE_SPAN:
        return image.resize((width, height), Image.Resampling.BICUBIC)
    out = Image.new(image.mode, (width, height))
    if width >= height:
        scale = w0 / width
        for x0 in range(0, width, _MAX_RESIZE_SPAN):
            x1 = min(width, x0 + _MAX_RESIZE_SPAN)
            box = (x0 * scale, 0.0, x1 * scale, float(h0))
            out.paste(_resize_box(image, x1 - x0, height, box), (x0, 0))
    else:
        scale = h0 / height
        for y0 in range(0, height, _MAX_RESIZE_SPAN):
            y1 = min(height, y0 + _MAX_RESIZE_SPAN)
            box = (0.0, y0 * scale, float(w0), y1 * scale)
            out.paste(_resize_box(image, width, y1 - y0, box), (0, y0))
    return out


def _resize_box(image: Image.Image, width: int, height: int, box: tuple[float, float, float, float]) -> Image.Image:
    return image.resize((width, height), Image.Resampling.BICUBIC, box=box)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 scaled (65535 → 255); floats in [0, 1] rounded to 8 bits."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def encode_image(pixels: np.ndarray, fmt: OutputFormat = "png") -> bytes:
    """Pixels [H, W, 1|3] (uint8, or floats in [0, 1]) → PNG, lossless WebP or JPEG (quality 95) bytes."""
    u8 = to_uint8(pixels)
    if fmt == "png" and u8.shape[0] * u8.shape[1] <= FAST_PNG_MAX_PIXELS:
        return encode_png(u8)
    image = Image.fromarray(np.ascontiguousarray(u8[..., 0] if u8.shape[-1] == 1 else u8))
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=LARGE_PNG_LEVEL)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", lossless=True)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buffer.getvalue()


def mse_psnr(reference: np.ndarray, output: np.ndarray) -> tuple[float, float | None]:
    """MSE of two images in [0, 1] (floats, or uint8/uint16 read as such) and PSNR in dB (None when they
    are identical). Float64 sums, in row chunks: no full-size float64 difference of a big image."""
    total, count = 0.0, 0
    for row in range(0, reference.shape[0], CHUNK_ROWS):
        a = reference[row : row + CHUNK_ROWS]
        b = output[row : row + CHUNK_ROWS]
        b = b if b.dtype.kind == "f" else to_float(b, b.shape[-1])
        a = a if a.dtype.kind == "f" and a.shape[-1] == b.shape[-1] else to_float(a, b.shape[-1])
        diff = np.subtract(a, b, dtype=np.float64).ravel()
        total += float(diff @ diff)
        count += diff.size
    mse = total / max(count, 1)
    return mse, (10.0 * math.log10(1.0 / mse) if mse > 0 else None)
