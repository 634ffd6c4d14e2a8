"""What the image routes share: read the uploads, decode them for a model, label errors, set headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
from fastapi import Request

from service.app.config import Settings
from service.app.uploads import Upload, read_uploads
from service.inference import imaging
from service.inference.errors import InferenceTimeout, ServiceError
from service.inference.registry import LoadedModel

#: Images up to this many pixels are decoded and encoded on the event loop: for a small image (an MNIST
#: digit) the hop to a worker thread costs more than the work itself (bench/serve.py). Bigger ones, and
#: uploads whose header claims more (a 1 KB PNG can hold a megapixel), go to a worker thread.
INLINE_MAX_PIXELS = 64 * 64

T = TypeVar("T")
U = TypeVar("U")


async def read_images(
    request: Request, settings: Settings, model: LoadedModel
) -> list[tuple[Upload, imaging.SourceImage]]:
    """Uploads decoded (big ones off the event loop) to the model's channel count, limits checked first."""
    uploads = await read_uploads(request, max_bytes=settings.max_upload_bytes, max_files=settings.max_files)

    channels = model.card.input.channels

    async def decode_one(upload: Upload) -> imaging.SourceImage:
        image = imaging.open_image(upload.data, settings.max_pixels)  # header only: limits, format
        width, height = image.size
        if width * height <= INLINE_MAX_PIXELS:
            return imaging.decode_image(image, channels)
        return await asyncio.to_thread(imaging.decode_image, image, channels)

    sources = await for_each(uploads, decode_one)
    return list(zip(uploads, sources))


async def for_each(
    items: Sequence[T], work: Callable[[T], Awaitable[U]], *, timeout_s: float = 0.0
) -> list[U]:
    """Run `work` on every item concurrently (so the batcher can group them); the first failure wins,
    and with several items its message names the file. Past `timeout_s` (0 = none) the work is
    cancelled (queued items leave their batch) and the request answers 504."""
    if len(items) <= 1:  # the common case: awaited here, no Task and no gather to schedule
        return [await _within(work(item), timeout_s) for item in items]
    results = await _within(asyncio.gather(*(work(item) for item in items), return_exceptions=True), timeout_s)
    for item, result in zip(items, results):
        if isinstance(result, ServiceError) and isinstance(item, Upload):
            result.message = f"{item.label}: {result.message}"
            result.args = (result.message,)
        if isinstance(result, BaseException):
            raise result
    return results


async def _within(work: Awaitable[U], timeout_s: float) -> U:
    """Await `work`, turning a timeout past `timeout_s` (0 = none) into the request's 504."""
    if timeout_s <= 0:
        return await work
    try:
        async with asyncio.timeout(timeout_s):
            return await work
    except TimeoutError as exc:
        raise InferenceTimeout(
            f"inference did not finish within {timeout_s:g} s (AEC_REQUEST_TIMEOUT_S); the service is busy "
            "or the images are large"
        ) from exc


async def encode_image(pixels: np.ndarray, fmt: imaging.OutputFormat) -> bytes:
    """`imaging.encode_image`: inline for small results, in a worker thread for big ones."""
    if pixels.shape[0] * pixels.shape[1] <= INLINE_MAX_PIXELS:
        return imaging.encode_image(pixels, fmt)
    return await asyncio.to_thread(imaging.encode_image, pixels, fmt)


def model_headers(model: LoadedModel) -> dict[str, str]:
    return {"X-Model": model.name, "X-Model-Version": str(model.version)}


def quality_header(quality: float | None) -> dict[str, str]:
    """`X-Quality` for a variable-rate model's result (none for a single-rate one)."""
    return {} if quality is None else {"X-Quality": f"{quality:.2f}"}


def size_headers(plan: imaging.SizePlan, channels: int) -> dict[str, str]:
    return {
        "X-Original-Width": str(plan.width),
        "X-Original-Height": str(plan.height),
        "X-Original-Channels": str(channels),
        "X-Size-Policy": plan.policy,
        "X-Size-Action": plan.action,
    }
