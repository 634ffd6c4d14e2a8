"""POST /encode, /decode, /reconstruct: thin routes over service.inference.codec."""

from __future__ import annotations

from typing import NamedTuple

from fastapi import APIRouter, Request
from fastapi.responses import Response

from contract.bitstream import Bitstream
from contract.card import quality_hundredths
from service.app import negotiate, query
from service.app.budget import over_budget
from service.app.deps import KeyedRoute, model_for, settings_of
from service.app.openapi import BINARY, BUSY, IMAGE_BODY, STREAM_BODY, errors
from service.app.routes.common import (
    INLINE_JSON_BYTES,
    encode_image,
    for_each,
    json_response,
    model_headers,
    pixel_budget,
    quality_header,
    read_images,
    size_headers,
)
from service.app.schemas import DecodeResult, EncodeResult, ReconstructResult
from service.app.uploads import Upload, read_uploads
from service.inference import codec, imaging
from service.inference.errors import BitstreamModelMismatch
from service.inference.registry import LoadedModel

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
    async with read_images(request, settings, model) as items:
        encoded = await for_each(
            items, lambda item: codec.encode(model, item[1], settings.tiling, q.quality),
            timeout_s=settings.request_timeout_s,
        )
        uploads = [upload for upload, _ in items]
        del items  # the decoded pixels go with the budget they held; only the streams remain
    for result in encoded:
        metrics.bpp.labels(model.name).observe(result.bpp)
    headers = model_headers(model)
    if len(uploads) == 1 and not negotiate.wants_json(request):
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
        for upload, r in zip(uploads, encoded)
    ]
    big = sum(len(r.stream) for r in encoded) > INLINE_JSON_BYTES
    return await json_response(body if len(body) > 1 else body[0], headers, big=big)


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
    uploads = await read_uploads(request, max_bytes=settings.max_upload_bytes, max_files=settings.max_files,
                                 timeout_s=settings.body_timeout_s)
    fmt = negotiate.image_format(request, format)

    async def admit(upload: Upload) -> tuple[Bitstream, LoadedModel, int]:
        """Parse and check a stream against its model: every size the output will have, before any work."""
        stream = codec.parse(upload.data)
        if model is not None and model != stream.model:
            raise BitstreamModelMismatch(f"the bitstream was made by model {stream.model!r}, not {model!r}")
        if version is not None and version != stream.version:
            raise BitstreamModelMismatch(f"the bitstream was made by version {stream.version}, not {version}")
        if quality is not None and quality_hundredths(quality) != stream.quality_hundredths:
            coded = "a single rate" if stream.quality is None else f"quality {stream.quality:g}"
            raise BitstreamModelMismatch(f"the bitstream was coded at {coded}, not quality {quality:g}")
        loaded = registry.resolve(stream.model, stream.version)
        codec.check(loaded, stream, settings.max_pixels)
        return stream, loaded, stream.height * stream.width

    admitted = await for_each(uploads, admit)
    total = sum(pixels for _, _, pixels in admitted)
    if total > settings.max_request_pixels:
        raise over_budget(total, settings.max_request_pixels, f"the request's {len(admitted)} bitstreams")

    async def one(item: tuple[Upload, tuple[Bitstream, LoadedModel, int]]) -> _Decoded:
        stream, loaded, _ = item[1]
        pixels, _ = await codec.decode(loaded, stream, settings.max_pixels, settings.tiling)
        data = await encode_image(pixels, fmt)
        return _Decoded(loaded.name, loaded.version, stream.height, stream.width, stream.channels, data,
                        stream.quality)

    async with pixel_budget(request).hold(total, settings.request_timeout_s):
        decoded = await for_each(list(zip(uploads, admitted)), one, timeout_s=settings.request_timeout_s)
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
    big = sum(len(d.data) for d in decoded) > INLINE_JSON_BYTES
    return await json_response(body if len(body) > 1 else body[0], headers, big=big)


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
    fmt = negotiate.image_format(request, format)

    async def one(item: tuple[Upload, imaging.SourceImage]) -> tuple[codec.Reconstruction, bytes]:
        result = await codec.reconstruct(model, item[1], settings.tiling, q.quality)
        return result, await encode_image(result.pixels, fmt)

    async with read_images(request, settings, model) as items:
        results = await for_each(items, one, timeout_s=settings.request_timeout_s)
        files = [(upload, source.channels) for upload, source in items]
        outcomes = [(r.plan, r.mse, r.psnr, r.quality, data) for r, data in results]
        del items, results  # the pixels go with the budget they held; only the encoded images remain
    headers = model_headers(model)
    if len(files) == 1 and not negotiate.wants_json(request):
        plan, mse, psnr, quality, data = outcomes[0]
        headers |= size_headers(plan, files[0][1])
        headers |= {"X-MSE": f"{mse:.8g}", "X-PSNR": "inf" if psnr is None else f"{psnr:.4f}"}
        headers |= quality_header(quality)
        return Response(data, media_type=negotiate.media_type(fmt), headers=headers)
    body = [
        ReconstructResult(
            model=model.name, version=model.version, height=plan.height, width=plan.width,
            channels=channels, size_policy=plan.policy, size_action=plan.action, filename=upload.filename,
            media_type=negotiate.media_type(fmt), image=negotiate.b64(data), mse=mse, psnr=psnr,
            quality=quality,
        ).model_dump(mode="json")
        for (upload, channels), (plan, mse, psnr, quality, data) in zip(files, outcomes)
    ]
    big = sum(len(outcome[-1]) for outcome in outcomes) > INLINE_JSON_BYTES
    return await json_response(body if len(body) > 1 else body[0], headers, big=big)
