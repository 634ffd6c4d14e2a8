"""POST /encode, /decode, /reconstruct: thin routes over service.inference.codec."""

from __future__ import annotations

from typing import NamedTuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.app import negotiate, query
from service.app.deps import KeyedRoute, model_for, settings_of
from service.app.openapi import BINARY, BUSY, IMAGE_BODY, STREAM_BODY, errors
from service.app.routes.common import (
    encode_image,
    for_each,
    model_headers,
    quality_header,
    read_images,
    size_headers,
)
from service.app.schemas import DecodeResult, EncodeResult, ReconstructResult
from service.app.uploads import Upload, read_uploads
from service.contract.card import quality_hundredths
from service.inference import codec, imaging
from service.inference.errors import BitstreamModelMismatch

router = APIRouter(tags=["codec"], route_class=KeyedRoute)



@router.post(
    "/encode",
    summary="Compress images to bitstreams",
    description=(
        "Returns the self-describing bitstream as `application/octet-stream` with `X-Bpp`, `X-Bytes` and the "
        "original size in headers; `Accept: application/json` (or several multipart files) gives JSON with the "
        "stream in base64 (a list for several files). bpp = bytes*8/(H*W) of the original image. Variable-rate "
        "models take `?quality=` (fewer bits at lower values) and answer `X-Quality`."
    ),
    response_model=None,
    responses={200: {"model": EncodeResult | list[EncodeResult],
                     "content": {"application/octet-stream": {"schema": BINARY}}},
               **errors(400, 404, 413, 415, 422, *BUSY)},
    openapi_extra={**IMAGE_BODY, "parameters": query.parameters("model", "version", "quality")},
)
async def encode(request: Request) -> Response:
    q = query.parse(request)
    model = model_for(request, q.model, q.version)
    codec.model_quality(model, q.quality)  # refuse a bad quality before reading the images
    settings, metrics = settings_of(request), request.app.state.metrics
    items = await read_images(request, settings, model)
    encoded = await for_each(
        items, lambda item: codec.encode(model, item[1], settings.tiling, q.quality),
        timeout_s=settings.request_timeout_s,
    )
    for result in encoded:
        metrics.bpp.labels(model.name).observe(result.bpp)
    headers = model_headers(model)
    if len(items) == 1 and not negotiate.wants_json(request):
        result = encoded[0]
        headers |= size_headers(result.plan, result.channels)
        headers |= {"X-Bpp": f"{result.bpp:.6f}", "X-Bytes": str(len(result.stream))} | quality_header(result.quality)
        return Response(result.stream, media_type="application/octet-stream", headers=headers)
    body = [
        EncodeResult(
            model=model.name, version=model.version, height=r.plan.height, width=r.plan.width, channels=r.channels,
            size_policy=r.plan.policy, size_action=r.plan.action, filename=upload.filename,
            bitstream=negotiate.b64(r.stream), bytes=len(r.stream), bpp=r.bpp, quality=r.quality,
        ).model_dump(mode="json")
        for (upload, _), r in zip(items, encoded)
    ]
    return JSONResponse(body if len(body) > 1 else body[0], headers=headers)


class _Decoded(NamedTuple):
    model: str
    version: int
    height: int
    width: int
    channels: int
    data: bytes
    quality: float | None


@router.post(
    "/decode",
    summary="Decompress bitstreams to images",
    description=(
        "The model (and, for a variable-rate model, the quality) comes from the stream's header (name, version, "
        "tables hash, quality). `?model=`/`?version=`/`?quality=`, when "
        "given, must match it. Returns the image at its original size and channels (PNG unless `?format=` or "
        "Accept asks for WebP/JPEG), or JSON with base64 images (`Accept: application/json`, several files)."
    ),
    response_model=None,
    responses={200: {"model": DecodeResult | list[DecodeResult],
                     "content": {t: {"schema": BINARY} for t in imaging.MEDIA_TYPES.values()}},
               **errors(400, 404, 413, 422, *BUSY)},
    openapi_extra={**STREAM_BODY, "parameters": query.parameters("model", "version", "quality", "format")},
)
async def decode(request: Request) -> Response:
    q = query.parse(request)
    model, version, format, quality = q.model, q.version, q.format, q.quality
    settings, registry = settings_of(request), request.app.state.registry
    uploads = await read_uploads(request, max_bytes=settings.max_upload_bytes, max_files=settings.max_files)
    fmt = negotiate.image_format(request, format)

    async def one(upload: Upload) -> _Decoded:
        stream = codec.parse(upload.data)
        if model is not None and model != stream.model:
            raise BitstreamModelMismatch(f"the bitstream was made by model {stream.model!r}, not {model!r}")
        if version is not None and version != stream.version:
            raise BitstreamModelMismatch(f"the bitstream was made by version {stream.version}, not {version}")
        if quality is not None and quality_hundredths(quality) != stream.quality_hundredths:
            coded = "a single rate" if stream.quality is None else f"quality {stream.quality:g}"
            raise BitstreamModelMismatch(f"the bitstream was coded at {coded}, not quality {quality:g}")
        loaded = registry.resolve(stream.model, stream.version)
        pixels, _ = await codec.decode(loaded, stream, settings.max_pixels, settings.tiling)
        data = await encode_image(pixels, fmt)
        return _Decoded(loaded.name, loaded.version, stream.height, stream.width, stream.channels, data,
                        stream.quality)

    decoded = await for_each(uploads, one, timeout_s=settings.request_timeout_s)
    headers = {"X-Model": decoded[0].model, "X-Model-Version": str(decoded[0].version)}
    if len(uploads) == 1 and not negotiate.wants_json(request):
        d = decoded[0]
        headers |= {"X-Original-Width": str(d.width), "X-Original-Height": str(d.height),
                    "X-Original-Channels": str(d.channels)} | quality_header(d.quality)
        return Response(d.data, media_type=negotiate.media_type(fmt), headers=headers)
    body = [
        DecodeResult(
            model=d.model, version=d.version, height=d.height, width=d.width, channels=d.channels,
            media_type=negotiate.media_type(fmt), image=negotiate.b64(d.data), filename=upload.filename,
            quality=d.quality,
        ).model_dump(mode="json")
        for upload, d in zip(uploads, decoded)
    ]
    return JSONResponse(body if len(body) > 1 else body[0], headers=headers)


@router.post(
    "/reconstruct",
    summary="Encode and decode in one call (quality check)",
    description=(
        "Returns the reconstruction at the original size and channels (PNG; WebP/JPEG via `?format=` or Accept) "
        "with `X-MSE`/`X-PSNR` headers measured against the input as the model saw it (pixels in [0, 1]), or "
        "JSON with base64 images (`Accept: application/json`, several files)."
    ),
    response_model=None,
    responses={200: {"model": ReconstructResult | list[ReconstructResult],
                     "content": {t: {"schema": BINARY} for t in imaging.MEDIA_TYPES.values()}},
               **errors(400, 404, 413, 415, 422, *BUSY)},
    openapi_extra={**IMAGE_BODY, "parameters": query.parameters("model", "version", "quality", "format")},
)
async def reconstruct(request: Request) -> Response:
    q = query.parse(request)
    model, format = model_for(request, q.model, q.version), q.format
    codec.model_quality(model, q.quality)
    settings = settings_of(request)
    items = await read_images(request, settings, model)
    fmt = negotiate.image_format(request, format)

    async def one(item: tuple[Upload, imaging.SourceImage]) -> tuple[codec.Reconstruction, bytes]:
        result = await codec.reconstruct(model, item[1], settings.tiling, q.quality)
        return result, await encode_image(result.pixels, fmt)

    results = await for_each(items, one, timeout_s=settings.request_timeout_s)
    headers = model_headers(model)
    if len(items) == 1 and not negotiate.wants_json(request):
        result, data = results[0]
        headers |= size_headers(result.plan, items[0][1].channels)
        headers |= {"X-MSE": f"{result.mse:.8g}", "X-PSNR": "inf" if result.psnr is None else f"{result.psnr:.4f}"}
        headers |= quality_header(result.quality)
        return Response(data, media_type=negotiate.media_type(fmt), headers=headers)
    body = [
        ReconstructResult(
            model=model.name, version=model.version, height=r.plan.height, width=r.plan.width,
            channels=source.channels, size_policy=r.plan.policy, size_action=r.plan.action, filename=upload.filename,
            media_type=negotiate.media_type(fmt), image=negotiate.b64(data), mse=r.mse, psnr=r.psnr,
            quality=r.quality,
        ).model_dump(mode="json")
        for (upload, source), (r, data) in zip(items, results)
    ]
    return JSONResponse(body if len(body) > 1 else body[0], headers=headers)
