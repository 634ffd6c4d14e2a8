"""POST /encode, /decode, /reconstruct: thin routes over service.inference.codec."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from contract.bitstream import Bitstream
from service.app import negotiate, query
from service.app.budget import over_budget
from service.app.deps import HotContext, KeyedRoute
from service.app.openapi import BINARY, BUSY, IMAGE_BODY, STREAM_BODY, errors, success_headers
from service.app.routes.common import (
    Answer,
    bytes_or_json,
    encode_image,
    for_each,
    model_headers,
    quality_header,
    read_images,
    size_headers,
    uploads_of,
)
from service.app.schemas import DecodeResult, EncodeResult, ReconstructResult
from service.app.uploads import Upload
from service.inference import codec, imaging
from service.inference.registry import LoadedModel
from service.inference.stream_checks import check_requested

router = APIRouter(tags=["codec"], route_class=KeyedRoute)

_NO_PIXELS = np.zeros((0, 0, 1), np.uint8)
#: The headers of a bytes answer about one image (JSON answers have them as fields).
_SIZE = ("X-Model", "X-Model-Version", "X-Original-Width", "X-Original-Height", "X-Original-Channels",
         "X-Size-Policy", "X-Size-Action")


def stream_headers(r: codec.Reconstruction) -> dict[str, str]:
    """With a size target: the size of the stream the reconstruction decodes from."""
    if r.stream_bytes is None or r.bpp is None:
        return {}
    return {"X-Bytes": str(r.stream_bytes), "X-Bpp": f"{r.bpp:.6f}"}


def effort_header(effort: int) -> dict[str, str]:
    return {"X-Effort": str(effort)} if effort else {}


def search_header(encodes: int | None) -> dict[str, str]:
    """With a size target: how many encodes the search ran (at most codec.MAX_SEARCH_ENCODES)."""
    return {} if encodes is None else {"X-Search-Encodes": str(encodes)}


@router.post(
    "/encode",
    summary="Compress images to bitstreams",
    description=(
        "Returns the self-describing bitstream as `application/octet-stream` with `X-Bpp`, `X-Bytes` and the "
        "original size in headers; `Accept: application/json` (or several multipart files) gives JSON with the "
        "stream in base64 (a list for several files). bpp = bytes*8/(H*W) of the original image. Variable-rate "
        "models take `?quality=` (fewer bits at lower values) and answer `X-Quality`. `?max_bytes=N` or "
        "`?target_bpp=b` compress to a size instead: the highest quality whose stream fits, per image "
        f"(bisection in steps of 0.01, at most {codec.MAX_SEARCH_ENCODES} encodes per image), with the quality "
        "chosen in `X-Quality` and the encodes it took in `X-Search-Encodes`; 422 `target_too_small` names the "
        "smallest stream possible when none fits. `?effort=` (models with the setting) refines each image's "
        "latents before coding: fewer bits at the same quality for more encoder time, `X-Effort` echoes it."
    ),
    response_model=None,
    responses={200: {"model": EncodeResult | list[EncodeResult],
                     "content": {"application/octet-stream": {"schema": BINARY}},
                     "headers": success_headers(*_SIZE, "X-Bpp", "X-Bytes", "X-Quality", "X-Effort", "X-Search-Encodes")},
               **errors(400, 404, 413, 415, 422, *BUSY)},
    openapi_extra={**IMAGE_BODY, "parameters": query.parameters("model", "version", "quality", "effort", "max_bytes",
                                                                 "target_bpp")},
)
async def encode(ctx: HotContext) -> Response:
    model, settings = ctx.model(), ctx.settings
    # the quality in the contract's terms (hundredths, as the stream records it; None: single-rate),
    # validated against the model before any image is read; with a size target the search picks it
    target = codec.size_target(ctx.query.max_bytes, ctx.query.target_bpp)
    hundredths = None if target else codec.model_quality(model, ctx.query.quality)
    effort = codec.model_effort(model, ctx.query.effort)
    async with read_images(ctx, model) as items:
        codec.one_image_with_effort(effort, len(items))
        encoded = await for_each(
            items, lambda item: codec.encode(model, item[1], settings.tiling, hundredths=hundredths, target=target,
                                             effort=effort, effort_max_pixels=settings.effort_max_pixels),
            timeout_s=settings.effort_timeout_s if effort else settings.request_timeout_s,
            setting="AEC_EFFORT_TIMEOUT_S" if effort else "AEC_REQUEST_TIMEOUT_S",
        )
        uploads = [upload for upload, _ in items]
        del items  # the decoded pixels go with the budget they held; only the streams remain
    for result in encoded:
        ctx.metrics.bpp.labels(model.name).observe(result.bpp)

    def answer(upload: Upload, r: codec.Encoded) -> Answer:
        return Answer(
            r.stream, "application/octet-stream",
            size_headers(r.plan, r.channels) | {"X-Bpp": f"{r.bpp:.6f}", "X-Bytes": str(len(r.stream))}
            | quality_header(r.quality) | effort_header(effort) | search_header(r.search_encodes),
            lambda: EncodeResult(
                model=model.name, version=model.version, height=r.plan.height, width=r.plan.width,
                channels=r.channels, size_policy=r.plan.policy, size_action=r.plan.action, filename=upload.filename,
                bitstream=negotiate.b64(r.stream), bytes=len(r.stream), bpp=r.bpp, quality=r.quality,
                effort=effort, search_encodes=r.search_encodes,
            ),
        )

    return await bytes_or_json(ctx, [answer(u, r) for u, r in zip(uploads, encoded)], model_headers(model))


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
                     "content": {t: {"schema": BINARY} for t in imaging.MEDIA_TYPES.values()},
                     "headers": success_headers(*_SIZE[:5], "X-Quality")},
               **errors(400, 404, 413, 422, *BUSY)},
    openapi_extra={**STREAM_BODY, "parameters": query.parameters("model", "version", "quality", "format")},
)
async def decode(ctx: HotContext) -> Response:
    q, settings = ctx.query, ctx.settings
    uploads = await uploads_of(ctx)
    fmt = negotiate.image_format(ctx.request, q.format)

    async def admit(upload: Upload) -> tuple[Bitstream, LoadedModel, int]:
        """Parse and check a stream against the request and its model: every size the output will have,
        before any work."""
        stream = codec.parse(upload.data)
        check_requested(stream, q.model, q.version, q.quality)
        loaded = ctx.registry.resolve(stream.model, stream.version)
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

    async with ctx.pixel_budget.hold(total, settings.request_timeout_s):
        decoded = await for_each(list(zip(uploads, admitted)), one, timeout_s=settings.request_timeout_s)
    media_type = negotiate.media_type(fmt)

    def answer(upload: Upload, d: _Decoded) -> Answer:
        return Answer(
            d.data, media_type,
            {"X-Original-Width": str(d.width), "X-Original-Height": str(d.height),
             "X-Original-Channels": str(d.channels)} | quality_header(d.quality),
            lambda: DecodeResult(
                model=d.model, version=d.version, height=d.height, width=d.width, channels=d.channels,
                media_type=media_type, image=negotiate.b64(d.data), filename=upload.filename, quality=d.quality,
            ),
        )

    headers = {"X-Model": decoded[0].model, "X-Model-Version": str(decoded[0].version)}
    return await bytes_or_json(ctx, [answer(u, d) for u, d in zip(uploads, decoded)], headers)


@router.post(
    "/reconstruct",
    summary="Encode and decode in one call (quality check)",
    description=(
        "Returns the reconstruction at the original size and channels (PNG; WebP/JPEG via `?format=` or Accept) "
        "with `X-MSE`/`X-PSNR`/`X-MS-SSIM` headers measured against the input as the model saw it (pixels in "
        "[0, 1]), or JSON with base64 images (`Accept: application/json`, several files). MS-SSIM "
        "(tf.image.ssim_multiscale, default settings) needs at least 161 px on each side and is measured up to "
        "AEC_MS_SSIM_MAX_PIXELS (2^21 by default); otherwise `ms_ssim` is null and the header is omitted. `?max_bytes=`/`?target_bpp=` as "
        "on /encode: the reconstruction is then the decode of the stream found, whose size comes in `X-Bytes` "
        "and `X-Bpp`."
    ),
    response_model=None,
    responses={200: {"model": ReconstructResult | list[ReconstructResult],
                     "content": {t: {"schema": BINARY} for t in imaging.MEDIA_TYPES.values()},
                     "headers": success_headers(*_SIZE, "X-MSE", "X-PSNR", "X-MS-SSIM", "X-Quality", "X-Bytes",
                                                "X-Bpp", "X-Effort", "X-Search-Encodes")},
               **errors(400, 404, 413, 415, 422, *BUSY)},
    openapi_extra={**IMAGE_BODY, "parameters": query.parameters("model", "version", "quality", "effort", "max_bytes",
                                                                 "target_bpp", "format")},
)
async def reconstruct(ctx: HotContext) -> Response:
    model, settings = ctx.model(), ctx.settings
    # the quality in the contract's terms (hundredths, as the stream records it; None: single-rate),
    # validated against the model before any image is read; with a size target the search picks it
    target = codec.size_target(ctx.query.max_bytes, ctx.query.target_bpp)
    hundredths = None if target else codec.model_quality(model, ctx.query.quality)
    effort = codec.model_effort(model, ctx.query.effort)
    fmt = negotiate.image_format(ctx.request, ctx.query.format)

    async def one(item: tuple[Upload, imaging.SourceImage]) -> tuple[codec.Reconstruction, bytes]:
        result = await codec.reconstruct(model, item[1], settings.tiling, hundredths=hundredths, target=target,
                                         ms_ssim_max_pixels=settings.ms_ssim_max_pixels, effort=effort,
                                         effort_max_pixels=settings.effort_max_pixels)
        return result, await encode_image(result.pixels, fmt)

    async with read_images(ctx, model) as items:
        codec.one_image_with_effort(effort, len(items))
        results = await for_each(items, one,
                                 timeout_s=settings.effort_timeout_s if effort else settings.request_timeout_s,
                                 setting="AEC_EFFORT_TIMEOUT_S" if effort else "AEC_REQUEST_TIMEOUT_S")
        files = [(upload, source.channels) for upload, source in items]
        # the figures without the pixels: those go with the budget they held, only the images remain
        outcomes = [(dataclasses.replace(r, pixels=_NO_PIXELS), data) for r, data in results]
        del items, results
    media_type = negotiate.media_type(fmt)

    def answer(upload: Upload, channels: int, r: codec.Reconstruction, data: bytes) -> Answer:
        plan = r.plan
        return Answer(
            data, media_type,
            size_headers(plan, channels)
            | {"X-MSE": f"{r.mse:.8g}", "X-PSNR": "inf" if r.psnr is None else f"{r.psnr:.4f}"}
            | ({} if r.ms_ssim is None else {"X-MS-SSIM": f"{r.ms_ssim:.6f}"})
            | quality_header(r.quality) | effort_header(effort) | stream_headers(r) | search_header(r.search_encodes),
            lambda: ReconstructResult(
                model=model.name, version=model.version, height=plan.height, width=plan.width,
                channels=channels, size_policy=plan.policy, size_action=plan.action, filename=upload.filename,
                media_type=media_type, image=negotiate.b64(data), mse=r.mse, psnr=r.psnr, ms_ssim=r.ms_ssim,
                quality=r.quality, effort=effort,
                bytes=r.stream_bytes, bpp=r.bpp, search_encodes=r.search_encodes,
            ),
        )

    answers = [answer(upload, channels, *outcome) for (upload, channels), outcome in zip(files, outcomes)]
    return await bytes_or_json(ctx, answers, model_headers(model))
