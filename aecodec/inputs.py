"""Turning what callers have (paths, bytes, PIL images, numpy arrays, file objects) into upload bytes.

Images are sent in their own encoding when they already are files (no re-encoding, so the service
sees exactly the file), and as lossless PNG when they are pixels.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeAlias

from PIL import Image

if TYPE_CHECKING:
    import numpy as np

ImageInput: TypeAlias = "str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray | IO[bytes]"
StreamInput: TypeAlias = "str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Any"  # Any: EncodedImage

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"),
]


class Upload(NamedTuple):
    filename: str
    data: bytes
    content_type: str


def sniff(data: bytes) -> str:
    """The image media type from the first bytes (the service decides by the bytes too)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((media for magic, media in _MAGIC if data.startswith(magic)), "application/octet-stream")


def image_upload(image: ImageInput, index: int = 0) -> Upload:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data = path.read_bytes()
        return Upload(path.name, data, sniff(data))
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return Upload(f"image{index}", data, sniff(data))
    if isinstance(image, Image.Image):
        return Upload(f"image{index}.png", _png(image), "image/png")
    if hasattr(image, "__array_interface__"):
        return Upload(f"image{index}.png", _png(_from_array(image)), "image/png")
    if hasattr(image, "read"):
        data = image.read()
        name = Path(getattr(image, "name", f"image{index}")).name
        return Upload(str(name), data, sniff(data))
    raise TypeError(f"cannot send {type(image).__name__} as an image: pass a path, bytes, a PIL image or an array")


def stream_upload(stream: StreamInput, index: int = 0) -> Upload:
    if isinstance(stream, (str, os.PathLike)):
        path = Path(stream)
        return Upload(path.name, path.read_bytes(), "application/octet-stream")
    if isinstance(stream, (bytes, bytearray, memoryview)):
        return Upload(f"stream{index}.aec", bytes(stream), "application/octet-stream")
    if hasattr(stream, "read"):
        return Upload(Path(getattr(stream, "name", f"stream{index}.aec")).name, stream.read(), "application/octet-stream")
    if hasattr(stream, "__bytes__"):  # an EncodedImage
        return Upload(f"stream{index}.aec", bytes(stream), "application/octet-stream")
    raise TypeError(f"cannot send {type(stream).__name__} as a bitstream: pass bytes, a path or an EncodedImage")


def _png(image: Image.Image) -> bytes:
    if image.mode not in ("1", "L", "LA", "I;16", "I", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _from_array(array: Any) -> Image.Image:
    """uint8/uint16 as is; bool as 0/255; floats taken as [0, 1] (clipped); HxW, HxWx1, HxWx3, HxWx4."""
    import numpy as np

    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array is HxW, HxWx1, HxWx3 or HxWx4, not {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        return Image.fromarray(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.rint(np.nan_to_num(arr) * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"image arrays are uint8, uint16 (grey), bool or floats in [0, 1], not {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr))
