"""What the image routes share: read the uploads, decode them for a model, label errors, set headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from fastapi import Request

from service.app.config import Settings
from service.app.uploads import Upload, read_uploads
from service.inference import imaging
from service.inference.errors import ServiceError
from service.inference.registry import LoadedModel

T = TypeVar("T")
U = TypeVar("U")


async def read_images(
    request: Request, settings: Settings, model: LoadedModel
) -> list[tuple[Upload, imaging.SourceImage]]:
    """Uploads decoded (off the event loop) to the model's channel count, limits checked first."""
    uploads = await read_uploads(request, max_bytes=settings.max_upload_bytes, max_files=settings.max_files)

    def decode(upload: Upload) -> imaging.SourceImage:
        return imaging.read_image(upload.data, model.card.input.channels, settings.max_pixels)

    sources = await for_each(uploads, lambda u: asyncio.to_thread(decode, u))
    return list(zip(uploads, sources))


async def for_each(items: Sequence[T], work: Callable[[T], Awaitable[U]]) -> list[U]:
    """Run `work` on every item concurrently (so the batcher can group them); the first failure wins,
    and with several items its message names the file."""
    many = len(items) > 1
    results = await asyncio.gather(*(work(item) for item in items), return_exceptions=True)
    for item, result in zip(items, results):
        if isinstance(result, ServiceError) and many and isinstance(item, Upload):
            result.message = f"{item.label}: {result.message}"
            result.args = (result.message,)
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def model_headers(model: LoadedModel) -> dict[str, str]:
    return {"X-Model": model.name, "X-Model-Version": str(model.version)}


def size_headers(plan: imaging.SizePlan, channels: int) -> dict[str, str]:
    return {
        "X-Original-Width": str(plan.width),
        "X-Original-Height": str(plan.height),
        "X-Original-Channels": str(channels),
        "X-Size-Policy": plan.policy,
        "X-Size-Action": plan.action,
    }
