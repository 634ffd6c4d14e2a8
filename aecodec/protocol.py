"""The HTTP conversation, without doing any I/O: each call is a `Call` (request parts + a parser of
the response), which the sync and async clients send the same way. One place knows the API."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
from PIL import Image

from aecodec.inputs import ImageInput, StreamInput, Upload, image_upload, stream_upload
from aecodec.results import (
    AnomalyResult,
    EncodedImage,
    ModelInfo,
    Reconstruction,
    VersionInfo,
    psnr_value,
)

T = TypeVar("T")
JSON = "application/json"


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.params, "headers": self.headers}
        if self.files is not None:
            kwargs["files"] = self.files
        elif self.content is not None:
            kwargs["content"] = self.content
        return kwargs


def _params(model: str | None, version: int | None, **extra: Any) -> dict[str, str]:
    params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in extra.items() if v is not None}
    if model is not None:
        params["model"] = model
    if version is not None:
        params["version"] = str(version)
    return params


def _raw(upload: Upload) -> dict[str, Any]:
    return {"content": upload.data, "headers": {"Content-Type": upload.content_type}}


def _multipart(uploads: Sequence[Upload]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (u.filename, u.data, u.content_type)) for u in uploads]


def _items(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    return body if isinstance(body, list) else [body]


def _quality(headers: httpx.Headers) -> float | None:
    return _number(headers, "x-quality")


def _number(headers: httpx.Headers, name: str) -> float | None:
    return float(headers[name]) if name in headers else None


def _count(headers: httpx.Headers, name: str) -> int | None:
    return int(headers[name]) if name in headers else None


def rate_params(quality: float | None, max_bytes: int | None, target_bpp: float | None,
                effort: int | None = None) -> dict[str, Any]:
    """The quality or size target of an encode/reconstruct, and the encoder effort, as query parameters;
    the service validates them (at most one of the first three; max_bytes an integer >= 1, target_bpp > 0:
    422 invalid_request; effort within the model's range, one image: 422 invalid_effort)."""
    return {"quality": quality, "max_bytes": max_bytes, "target_bpp": target_bpp, "effort": effort or None}


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ---- encode ---------------------------------------------------------------------------------------
def encode(image: ImageInput, model: str | None, version: int | None,
           quality: float | None = None, max_bytes: int | None = None,
           target_bpp: float | None = None, effort: int | None = None) -> Call[EncodedImage]:
    rate = rate_params(quality, max_bytes, target_bpp, effort)
    upload = image_upload(image)

    def parse(response: httpx.Response) -> EncodedImage:
        h = response.headers
        return EncodedImage(
            data=response.content, bpp=float(h["x-bpp"]), model=h["x-model"], version=int(h["x-model-version"]),
            width=int(h["x-original-width"]), height=int(h["x-original-height"]),
            channels=int(h["x-original-channels"]), size_policy=h.get("x-size-policy"),
            size_action=h.get("x-size-action"), filename=upload.filename, quality=_quality(h),
            search_encodes=_count(h, "x-search-encodes"), effort=_count(h, "x-effort") or 0,
        )

    raw = _raw(upload)
    return Call("POST", "/encode", parse, _params(model, version, **rate), raw["content"],
                headers=raw["headers"] | {"Accept": "application/octet-stream"})


def encode_batch(images: Sequence[ImageInput], model: str | None, version: int | None,
                 quality: float | None = None, max_bytes: int | None = None,
                 target_bpp: float | None = None, effort: int | None = None) -> Call[list[EncodedImage]]:
    rate = rate_params(quality, max_bytes, target_bpp, effort)
    uploads = [image_upload(image, i) for i, image in enumerate(images)]

    def parse(response: httpx.Response) -> list[EncodedImage]:
        return [
            EncodedImage(
                data=base64.b64decode(item["bitstream"]), bpp=item["bpp"], model=item["model"],
                version=item["version"], width=item["width"], height=item["height"], channels=item["channels"],
                size_policy=item["size_policy"], size_action=item["size_action"], filename=item.get("filename"),
                quality=item.get("quality"), search_encodes=item.get("search_encodes"),
                effort=item.get("effort", 0),
            )
            for item in _items(response)
        ]

    return Call("POST", "/encode", parse, _params(model, version, **rate), files=_multipart(uploads),
                headers={"Accept": JSON})


# ---- decode ---------------------------------------------------------------------------------------
def decode(stream: StreamInput, fmt: str | None, model: str | None = None, version: int | None = None,
           quality: float | None = None) -> Call[Image.Image]:
    """`model`/`version`/`quality`, when given, must match what the stream's header records (the
    service answers 422 bitstream_model_mismatch otherwise); the stream alone names its model."""
    upload = stream_upload(stream)
    return Call("POST", "/decode", lambda r: _image(r.content), _params(model, version, format=fmt, quality=quality),
                upload.data, headers={"Content-Type": "application/octet-stream", "Accept": "image/png"})


def decode_batch(streams: Sequence[StreamInput], fmt: str | None, model: str | None = None,
                 version: int | None = None, quality: float | None = None) -> Call[list[Image.Image]]:
    uploads = [stream_upload(stream, i) for i, stream in enumerate(streams)]

    def parse(response: httpx.Response) -> list[Image.Image]:
        return [_image(base64.b64decode(item["image"])) for item in _items(response)]

    return Call("POST", "/decode", parse, _params(model, version, format=fmt, quality=quality),
                files=_multipart(uploads), headers={"Accept": JSON})


# ---- reconstruct ----------------------------------------------------------------------------------
def reconstruct(image: ImageInput, model: str | None, version: int | None,
                quality: float | None = None, max_bytes: int | None = None,
                target_bpp: float | None = None, effort: int | None = None) -> Call[Reconstruction]:
    rate = rate_params(quality, max_bytes, target_bpp, effort)
    upload = image_upload(image)

    def parse(response: httpx.Response) -> Reconstruction:
        h = response.headers
        return Reconstruction(
            image=_image(response.content), psnr=psnr_value(h.get("x-psnr")), mse=float(h["x-mse"]),
            model=h["x-model"], version=int(h["x-model-version"]), width=int(h["x-original-width"]),
            height=int(h["x-original-height"]), channels=int(h["x-original-channels"]), filename=upload.filename,
            quality=_quality(h), ms_ssim=_number(h, "x-ms-ssim"), stream_bytes=_count(h, "x-bytes"),
            bpp=_number(h, "x-bpp"), search_encodes=_count(h, "x-search-encodes"),
            effort=_count(h, "x-effort") or 0,
        )

    raw = _raw(upload)
    return Call("POST", "/reconstruct", parse, _params(model, version, format="png", **rate), raw["content"],
                headers=raw["headers"] | {"Accept": "image/png"})


def reconstruct_batch(
    images: Sequence[ImageInput], model: str | None, version: int | None, quality: float | None = None,
    max_bytes: int | None = None, target_bpp: float | None = None, effort: int | None = None,
) -> Call[list[Reconstruction]]:
    rate = rate_params(quality, max_bytes, target_bpp, effort)
    uploads = [image_upload(image, i) for i, image in enumerate(images)]

    def parse(response: httpx.Response) -> list[Reconstruction]:
        return [
            Reconstruction(
                image=_image(base64.b64decode(item["image"])),
                psnr=psnr_value(None if item["psnr"] is None else str(item["psnr"])), mse=item["mse"],
                model=item["model"], version=item["version"], width=item["width"], height=item["height"],
                channels=item["channels"], filename=item.get("filename"), quality=item.get("quality"),
                ms_ssim=item.get("ms_ssim"), stream_bytes=item.get("bytes"), bpp=item.get("bpp"),
                search_encodes=item.get("search_encodes"), effort=item.get("effort", 0),
            )
            for item in _items(response)
        ]

    return Call("POST", "/reconstruct", parse, _params(model, version, format="png", **rate),
                files=_multipart(uploads),
                headers={"Accept": JSON})


# ---- anomaly score --------------------------------------------------------------------------------
def _anomaly(item: dict[str, Any]) -> AnomalyResult:
    heatmap = _image(base64.b64decode(item["heatmap"])) if item.get("heatmap") else None
    errors = np.asarray(item["error_map"], dtype=np.float32) if item.get("error_map") is not None else None
    return AnomalyResult(
        score=item["score"], threshold=item["threshold"], is_anomaly=item["is_anomaly"],
        normalized_score=item["normalized_score"], score_kind=item["score_kind"], model=item["model"], version=item["version"], width=item["width"],
        height=item["height"], channels=item["channels"], heatmap=heatmap, filename=item.get("filename"),
        error_map=errors,
    )


def anomaly_score(image: ImageInput, model: str | None, version: int | None, heatmap: bool,
                  error_map: bool = False) -> Call[AnomalyResult]:
    raw = _raw(image_upload(image))
    return Call("POST", "/anomaly-score", lambda r: _anomaly(_items(r)[0]),
                _params(model, version, heatmap=heatmap, error_map=error_map or None),
                raw["content"], headers=raw["headers"] | {"Accept": JSON})


def anomaly_score_batch(
    images: Sequence[ImageInput], model: str | None, version: int | None, heatmap: bool, error_map: bool = False
) -> Call[list[AnomalyResult]]:
    uploads = [image_upload(image, i) for i, image in enumerate(images)]
    return Call("POST", "/anomaly-score", lambda r: [_anomaly(item) for item in _items(r)],
                _params(model, version, heatmap=heatmap, error_map=error_map or None), files=_multipart(uploads),
                headers={"Accept": JSON})


# ---- models and health ----------------------------------------------------------------------------
def _model_info(item: dict[str, Any]) -> ModelInfo:
    versions = [
        VersionInfo(version=v["version"], state=v["state"], architecture=v.get("architecture"), input=v.get("input"),
                    anomaly_threshold=v.get("anomaly_threshold"), metrics=v.get("metrics") or {}, error=v.get("error"))
        for v in item["versions"]
    ]
    return ModelInfo(item["name"], item["is_default"], item["default_version"], versions)


def models() -> Call[list[ModelInfo]]:
    return Call("GET", "/models", lambda r: [_model_info(m) for m in r.json()["models"]], headers={"Accept": JSON})


def ready() -> Call[bool]:
    return Call("GET", "/readyz", lambda r: r.json().get("status") == "ready", headers={"Accept": JSON})
