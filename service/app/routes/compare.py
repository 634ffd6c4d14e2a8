"""POST /compare: one image through our codec and through JPEG, WebP and AVIF at the same byte count.

The server encodes the image with the model (at `?quality=` for a variable-rate one), decodes that stream,
and fits each classic codec to the stream's byte count with Pillow (`service.inference.compare`), so the
comparison works offline and the same everywhere. Same API key, byte, file and pixel limits as the other
POST routes, plus one of its own: at most `MAX_COMPARE_PIXELS` (each codec encodes the image ~8 times).
The classic codecs run in one worker thread per process (`_EXECUTOR`): concurrent comparisons queue
there rather than taking every core, and the event loop never runs them.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.app import negotiate, query
from service.app.deps import HotContext, KeyedRoute, RequestContext
from service.app.openapi import BINARY, BUSY, errors
from service.app.routes.common import for_each, json_answer, model_headers, read_images
from service.app.schemas import _ImageFacts, _Quality
from service.app.uploads import Upload
from service.inference import codec, compare, imaging
from service.inference.errors import TooManyFiles
from service.inference.registry import LoadedModel

router = APIRouter(tags=["compare"], route_class=KeyedRoute)

#: The classic encoders' thread: one comparison at a time per process (each is CPU-bound for seconds).
_EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="compare")

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff")
ONE_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One image as the raw body (`--data-binary @x.png -H 'Content-Type: image/png'`) or as one multipart "
            "file (`-F file=@x.png`): PNG, JPEG, WebP, BMP or TIFF, grey or colour, of at most "
            f"{compare.MAX_COMPARE_PIXELS} pixels (413 too_many_pixels above; 413 too_many_files for several files)."
        ),
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"file": {"type": "array", "items": BINARY, "minItems": 1, "maxItems": 1,
                                        "description": "One image file."}},
                "required": ["file"],
            }},
            **{t: {"schema": BINARY} for t in _IMAGE_TYPES},
        },
    }
}


class CodecResult(BaseModel):
    codec: Literal["aec", "jpeg", "webp", "avif"] = Field(description="`aec` is the model's own stream.")
    available: bool = Field(description="False when this server's Pillow cannot write the codec (then all else null).")
    reason: str | None = Field(None, description="Why the codec is unavailable.")
    settings: str = Field(description="How the file was written.")
    quality: int | float | None = Field(None, description="The codec's quality: for the classic codecs the largest "
                                  "integer on its scale whose file fits (the lowest when none fits).")
    min_quality: int | float | None = Field(None, description="The bottom of the codec's quality scale.")
    max_quality: int | float | None = Field(None, description="The top of the codec's quality scale.")
    bytes: int | None = Field(None, description="File size; for `aec` the whole stream, header included.")
    bpp: float | None = Field(None, description="bytes * 8 / (height * width).")
    fits: bool | None = Field(None, description="bytes <= target_bytes (false: even the lowest quality is bigger).")
    at_max_quality: bool | None = Field(None, description="The top of the scale fits: the codec could not "
                                        "spend all the bytes.")
    next_quality_bytes: int | None = Field(None, description="The file one quality step up, which does not fit "
                                           "(null at the top of the scale, when nothing fits, and for `aec`).")
    encodes: int | None = Field(None, description="Files the search wrote.")
    mse: float | None = Field(None, description="MSE on 8-bit pixels against the upload, in [0, 1] units.")
    psnr: float | None = Field(None, description="PSNR in dB (null when identical to the upload).")
    ms_ssim: float | None = Field(None, description="MS-SSIM on 8-bit pixels against the upload "
                                  "(tf.image.ssim_multiscale, default settings); null under 161 px on a side "
                                  "or over AEC_MS_SSIM_MAX_PIXELS, as on /reconstruct.")
    media_type: str = Field(description="The file's media type (`application/octet-stream` for `aec`).")
    image: str | None = Field(None, description="The classic codec's file, base64 (null for `aec`: /encode "
                              "gives the stream, /decode its image).")


class CompareResult(_ImageFacts, _Quality):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "natural", "version": 9, "height": 500, "width": 500, "channels": 3, "size_policy": "pad",
        "size_action": "padded", "filename": "photo.png", "quality": 4.0, "target_bytes": 8712,
        "measured": "PSNR on 8-bit pixels of each decoded file against the upload",
        "codecs": [{"codec": "aec", "available": True, "settings": "natural v9 at quality 4.00", "quality": 4.0,
                    "bytes": 8712, "bpp": 0.2788, "psnr": 28.1, "media_type": "application/octet-stream"},
                   {"codec": "jpeg", "available": True, "settings": "Pillow JPEG", "quality": 12, "bytes": 8690,
                    "bpp": 0.278, "fits": True, "at_max_quality": False, "next_quality_bytes": 9105,
                    "psnr": 25.9, "media_type": "image/jpeg", "image": "/9j/4AAQ..."}],
        "heatmap": None,
    }]})
    target_bytes: int = Field(description="Our stream's byte count: what every classic codec is fitted to.")
    measured: str = Field(description="How the figures are measured.")
    codecs: list[CodecResult] = Field(description="`aec` (ours) first, then jpeg, webp, avif.")
    heatmap: str | None = Field(None, description="With `?heatmap=true`: our per-pixel RMS error at this quality "
                                "over a grey copy of the upload, on a fixed scale (full colour at 32/255), so maps "
                                "at two qualities compare (base64 PNG, the upload's size).")


@router.post(
    "/compare",
    summary="Our codec against JPEG, WebP and AVIF at the same bytes",
    description=(
        "Encodes the image with the model (`?quality=` for variable-rate models), decodes the stream, and "
        "compresses the same image with JPEG, WebP and AVIF (Pillow, on the server) at the largest quality "
        "whose file is at most the stream's byte count (bisection over each codec's quality scale). Answers "
        "each file's size, bpp, PSNR and MS-SSIM against the upload, the classic files in base64, and with "
        "`?heatmap=true` our error at this quality as a heat map. A codec this server's Pillow cannot write "
        "is listed with `available: false`. One image of at most "
        f"{compare.MAX_COMPARE_PIXELS} pixels."
    ),
    response_model=CompareResult,
    responses=errors(400, 404, 413, 415, 422, *BUSY),
    openapi_extra={**ONE_IMAGE_BODY, "parameters": query.parameters("model", "version", "quality", "heatmap")},
)
async def compare_codecs(ctx: HotContext) -> Response:
    model, settings = ctx.model(), ctx.settings
    hundredths = codec.model_quality(model, ctx.query.quality)  # a bad quality: 422 before the body is read
    limit = min(settings.max_pixels, compare.MAX_COMPARE_PIXELS)
    why = "/compare encodes each image about 25 times (MAX_COMPARE_PIXELS): send images of"
    async with read_images(ctx, model, max_image_pixels=limit, why_image_limit=why) as items:
        if len(items) != 1:
            raise TooManyFiles(f"/compare takes one image, the request holds {len(items)}")
        result = (await for_each(items, lambda item: _compare(ctx, model, item, hundredths),
                                 timeout_s=settings.request_timeout_s))[0]
        del items
    return await json_answer([result], model_headers(model), big=True)


async def _compare(ctx: RequestContext, model: LoadedModel, item: tuple[Upload, imaging.SourceImage],
                   hundredths: int | None) -> dict:
    settings = ctx.settings
    upload, source = item
    encoded = await codec.encode(model, source, settings.tiling, hundredths=hundredths)
    pixels, plan = await codec.decode(model, codec.parse(encoded.stream), settings.max_pixels, settings.tiling)
    target = len(encoded.stream)
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(
        _EXECUTOR, lambda: compare.compare(source.pixels, pixels, target, with_heatmap=ctx.query.heatmap,
                                           ms_ssim_max_pixels=settings.ms_ssim_max_pixels))
    height, width = source.height, source.width
    quality = encoded.quality
    ours = CodecResult(
        codec="aec", available=True, media_type="application/octet-stream",
        settings=f"{model.name} v{model.version}" + ("" if quality is None else f" at quality {quality:.2f}"),
        quality=quality, min_quality=model.card.rate.min_quality if model.card.rate else None,
        max_quality=model.card.rate.max_quality if model.card.rate else None, bytes=target,
        bpp=compare.bpp(target, height, width), fits=True, mse=found.ours.mse, psnr=found.ours.psnr,
        ms_ssim=found.ours.ms_ssim,
    )
    rows = [ours]
    for entry in found.entries:
        spec, fit, measured = entry.spec, entry.fit, entry.measured
        if fit is None or measured is None:
            rows.append(CodecResult(codec=entry.codec, available=False, reason=entry.reason, settings=spec.settings,
                                    media_type=spec.media_type))
            continue
        rows.append(CodecResult(
            codec=entry.codec, available=True, settings=spec.settings, quality=fit.quality,
            min_quality=spec.min_quality, max_quality=spec.max_quality, bytes=len(fit.data),
            bpp=compare.bpp(len(fit.data), height, width), fits=fit.fits, at_max_quality=fit.at_max_quality,
            next_quality_bytes=fit.next_bytes, encodes=fit.encodes, mse=measured.mse, psnr=measured.psnr,
            ms_ssim=measured.ms_ssim, media_type=spec.media_type, image=negotiate.b64(fit.data),
        ))
    return CompareResult(
        model=model.name, version=model.version, height=height, width=width, channels=source.channels,
        size_policy=plan.policy, size_action=plan.action, filename=upload.filename, quality=quality,
        target_bytes=target, measured="PSNR and MS-SSIM on 8-bit pixels of each decoded file against the upload, "
        "at its size and channels",
        codecs=rows, heatmap=None if found.heatmap is None else negotiate.b64(found.heatmap),
    ).model_dump(mode="json")
