"""`AsyncClient`: the asyncio twin of `Client` (same methods, awaited; `async with AsyncClient(...)`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self, TypeVar

import httpx
from PIL import Image

from aecodec import protocol
from aecodec.errors import ServiceUnavailable, connection_failed, error_from_response
from aecodec.inputs import ImageInput, StreamInput
from aecodec.results import AnomalyResult, EncodedImage, ModelInfo, Reconstruction
from aecodec.sync import DEFAULT_URL, client_headers

T = TypeVar("T")


class AsyncClient:
    """Calls the service; `model`/`version` set here are the defaults for every call.

    Errors come back as `aecodec.errors.ServiceError` subclasses (ModelNotFound, InvalidImage, ...).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        model: str | None = None,
        version: int | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.model, self.version = base_url.rstrip("/"), model, version
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                  headers=client_headers(api_key, headers), transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: protocol.Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as exc:
            raise connection_failed(exc, self.base_url) from exc
        if response.is_error:
            raise error_from_response(response)
        return call.parse(response)

    def _pick(self, model: str | None, version: int | None) -> tuple[str | None, int | None]:
        return (model or self.model, version if version is not None else (self.version if model is None else None))

    # ---- one image per call ----------------------------------------------------------------------
    async def encode(self, image: ImageInput, *, model: str | None = None, version: int | None = None,
                     quality: float | None = None, max_bytes: int | None = None,
                     target_bpp: float | None = None, effort: int | None = None) -> EncodedImage:
        """`max_bytes` / `target_bpp`: the highest quality whose stream fits (variable-rate models;
        a single-rate one fits or fails with 422 target_too_small), not with `quality`. `effort`: models
        with an encoder effort setting refine the latents first (fewer bits, more encoder time)."""
        call = protocol.encode(image, *self._pick(model, version), quality, max_bytes, target_bpp, effort)
        return await self._send(call)

    async def decode(self, stream: StreamInput, *, format: str | None = None, model: str | None = None,
                     version: int | None = None, quality: float | None = None) -> Image.Image:
        """The model comes from the stream's header; `format` is png (default), webp or jpeg. `model`,
        `version`, `quality`, when given, must match what the stream records (422 bitstream_model_mismatch,
        raised as BitstreamMismatch); the client's own default model is not applied here."""
        return await self._send(protocol.decode(stream, format, model, version, quality))

    async def reconstruct(self, image: ImageInput, *, model: str | None = None, version: int | None = None,
                          quality: float | None = None, max_bytes: int | None = None,
                          target_bpp: float | None = None, effort: int | None = None) -> Reconstruction:
        """`max_bytes` / `target_bpp` as for `encode`: the reconstruction is the decode of that stream."""
        call = protocol.reconstruct(image, *self._pick(model, version), quality, max_bytes, target_bpp, effort)
        return await self._send(call)

    async def anomaly_score(
        self, image: ImageInput, heatmap: bool = False, *, error_map: bool = False, model: str | None = None,
        version: int | None = None,
    ) -> AnomalyResult:
        return await self._send(protocol.anomaly_score(image, *self._pick(model, version), heatmap, error_map))

    # ---- several images in one multipart request (up to the service's AEC_MAX_FILES) --------------
    async def encode_batch(
        self, images: Sequence[ImageInput], *, model: str | None = None, version: int | None = None,
        quality: float | None = None, max_bytes: int | None = None, target_bpp: float | None = None,
        effort: int | None = None,
    ) -> list[EncodedImage]:
        call = protocol.encode_batch(images, *self._pick(model, version), quality, max_bytes, target_bpp, effort)
        return await self._send(call)

    async def decode_batch(self, streams: Sequence[StreamInput], *, format: str | None = None, model: str | None = None,
                           version: int | None = None, quality: float | None = None) -> list[Image.Image]:
        return await self._send(protocol.decode_batch(streams, format, model, version, quality))

    async def reconstruct_batch(
        self, images: Sequence[ImageInput], *, model: str | None = None, version: int | None = None,
        quality: float | None = None, max_bytes: int | None = None, target_bpp: float | None = None,
        effort: int | None = None,
    ) -> list[Reconstruction]:
        call = protocol.reconstruct_batch(images, *self._pick(model, version), quality, max_bytes, target_bpp, effort)
        return await self._send(call)

    async def anomaly_score_batch(
        self, images: Sequence[ImageInput], heatmap: bool = False, *, error_map: bool = False,
        model: str | None = None, version: int | None = None,
    ) -> list[AnomalyResult]:
        return await self._send(protocol.anomaly_score_batch(images, *self._pick(model, version), heatmap, error_map))

    # ---- metadata ---------------------------------------------------------------------------------
    async def models(self) -> list[ModelInfo]:
        return await self._send(protocol.models())

    async def ready(self) -> bool:
        """True when models are loaded and warm; False while loading or when none could be loaded."""
        try:
            return await self._send(protocol.ready())
        except ServiceUnavailable:
            return False
