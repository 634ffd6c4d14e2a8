"""What the image routes share: read the uploads, decode them for a model, label errors, set headers,
and answer: one result as bytes, several (or a client asking for JSON) as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel

from service.app import negotiate
from service.app.budget import over_budget
from service.app.deps import RequestContext
from service.app.uploads import Upload, read_uploads
from service.inference import imaging
from service.inference.errors import InferenceTimeout, ServiceError, TooManyPixels
from service.inference.registry import LoadedModel

#: Uploads up to this many bytes have their header parsed on the event loop; bigger ones in a worker
#: thread (a PNG's text and ICC chunks are inflated while its header is read: up to 1 MiB each).
INLINE_OPEN_BYTES = 8 * 1024
#: JSON answers carrying more than this many bytes of images (or any error map) are rendered off the loop.
INLINE_JSON_BYTES = 256 * 1024

T = TypeVar("T")
U = TypeVar("U")


@contextlib.asynccontextmanager
async def read_images(
    ctx: RequestContext, model: LoadedModel, *, max_image_pixels: int | None = None, why_image_limit: str = "",
) -> AsyncIterator[list[tuple[Upload, imaging.SourceImage]]]:
    """The uploads, decoded (big ones off the event loop), for the body of an `async with`.

    Every limit is checked from the image headers before a pixel is decoded: each image against
    AEC_MAX_PIXELS (and `max_image_pixels`, where the answer grows with the image), their sum against
    AEC_MAX_REQUEST_PIXELS; then the sum is held in the in-flight budget until the `with` ends (the
    route builds its answer inside it, so the pixels are counted while they exist)."""
    settings = ctx.settings
    uploads = await uploads_of(ctx)

    async def open_one(upload: Upload) -> Image.Image:
        if len(upload.data) <= INLINE_OPEN_BYTES:
            image = imaging.open_image(upload.data, settings.max_pixels)
        else:
            image = await asyncio.to_thread(imaging.open_image, upload.data, settings.max_pixels)
        width, height = image.size
        if max_image_pixels is not None and width * height > max_image_pixels:
            raise TooManyPixels(f"image is {width}x{height} = {width * height} pixels; {why_image_limit} "
                                f"up to {max_image_pixels} pixels")
        return image

    images = await for_each(uploads, open_one)
    total = sum(image.size[0] * image.size[1] for image in images)
    if total > settings.max_request_pixels:
        raise over_budget(total, settings.max_request_pixels, f"the request's {len(images)} images")
    channels = model.card.input.channels

    async def decode_one(item: tuple[Upload, Image.Image]) -> imaging.SourceImage:
        width, height = item[1].size
        return await imaging.off_loop(width * height, imaging.decode_image, item[1], channels)

    async with ctx.pixel_budget.hold(total, settings.request_timeout_s):
        sources = await for_each(list(zip(uploads, images)), decode_one)
        yield list(zip(uploads, sources))


async def uploads_of(ctx: RequestContext) -> list[Upload]:
    """The request's files (or raw body), read under the configured byte, file and time limits."""
    settings = ctx.settings
    return await read_uploads(ctx.request, max_bytes=settings.max_upload_bytes, max_files=settings.max_files,
                              timeout_s=settings.body_timeout_s)


def _label(item: object) -> str | None:
    """The upload an item is about (an Upload, or a tuple starting with one), to name it in errors."""
    if isinstance(item, tuple) and item and isinstance(item[0], Upload):
        item = item[0]
    return item.label if isinstance(item, Upload) else None


async def for_each(
    items: Sequence[T], work: Callable[[T], Awaitable[U]], *, timeout_s: float = 0.0,
    setting: str = "AEC_REQUEST_TIMEOUT_S",
) -> list[U]:
    """Run `work` on every item concurrently (so the batcher can group them); the first failure wins,
    and with several items its message names the file. Past `timeout_s` (0 = none) the work is
    cancelled (queued items leave their batch) and the request answers 504."""
    if len(items) <= 1:  # the common case: awaited here, no Task and no gather to schedule
        return [await _within(work(item), timeout_s, setting) for item in items]
    results = await _within(asyncio.gather(*(work(item) for item in items), return_exceptions=True), timeout_s,
                            setting)
    for item, result in zip(items, results):
        if isinstance(result, ServiceError) and (label := _label(item)) is not None:
            result.message = f"{label}: {result.message}"
            result.args = (result.message,)
        if isinstance(result, BaseException):
            raise result
    return results


async def _within(work: Awaitable[U], timeout_s: float, setting: str = "AEC_REQUEST_TIMEOUT_S") -> U:
    """Await `work`, turning a timeout past `timeout_s` (0 = none; the value of `setting`) into the
    request's 504."""
    if timeout_s <= 0:
        return await work
    try:
        async with asyncio.timeout(timeout_s):
            return await work
    except TimeoutError as exc:
        raise InferenceTimeout(
            f"inference did not finish within {timeout_s:g} s ({setting}); the service is busy "
            "or the images are large"
        ) from exc


async def encode_image(pixels: np.ndarray, fmt: imaging.OutputFormat) -> bytes:
    """`imaging.encode_image`: inline for small results, in a worker thread for big ones."""
    return await imaging.off_loop(pixels.shape[0] * pixels.shape[1], imaging.encode_image, pixels, fmt)


async def json_response(content: Any, headers: dict[str, str], *, big: bool) -> Response:
    """`JSONResponse(content)`, rendered in a worker thread when `big` (megabytes of base64 or an error
    map of many numbers take tens of milliseconds to serialise: not on the event loop)."""
    if not big:
        return JSONResponse(content, headers=headers)
    body = await asyncio.to_thread(_render_json, content)
    return Response(body, media_type="application/json", headers=headers)


def _render_json(content: Any) -> bytes:
    """What JSONResponse.render writes, byte for byte."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """One result of a route that answers bytes for one result and JSON otherwise (`bytes_or_json`)."""

    data: bytes  # the bitstream or the image file
    media_type: str
    headers: dict[str, str]  # the result's figures, as X- headers of a bytes answer
    entry: Callable[[], BaseModel]  # the result as a JSON entry (built only for a JSON answer)


async def bytes_or_json(ctx: RequestContext, answers: Sequence[Answer], headers: dict[str, str]) -> Response:
    """One result, for a client that does not prefer JSON: its bytes, with its figures in headers (after
    `headers`, the request's). Otherwise JSON (`json_answer`), the bytes in base64 inside."""
    if len(answers) == 1 and not negotiate.wants_json(ctx.request):
        answer = answers[0]
        return Response(answer.data, media_type=answer.media_type, headers=headers | answer.headers)
    big = sum(len(answer.data) for answer in answers) > INLINE_JSON_BYTES
    return await json_answer([answer.entry().model_dump(mode="json") for answer in answers], headers, big=big)


async def json_answer(entries: list[Any], headers: dict[str, str], *, big: bool) -> Response:
    """JSON: the entry of one result, a list for several (`json_response`)."""
    return await json_response(entries if len(entries) > 1 else entries[0], headers, big=big)


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
