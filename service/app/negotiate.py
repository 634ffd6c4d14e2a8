"""Content negotiation: JSON or bytes, and which image format, from `?format=` and the Accept header."""

from __future__ import annotations

import base64

from fastapi import Request

from service.inference.imaging import MEDIA_TYPES, OutputFormat

_BY_MEDIA_TYPE: dict[str, OutputFormat] = {"image/png": "png", "image/webp": "webp", "image/jpeg": "jpeg"}


def _accepted(request: Request) -> list[str]:
    """Media types of the Accept header, highest q first (stable for equal q)."""
    entries = []
    for index, part in enumerate(request.headers.get("accept", "").split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media and q > 0:
            entries.append((-q, index, media.lower()))
    return [media for _, _, media in sorted(entries)]


def wants_json(request: Request) -> bool:
    """JSON when the client prefers it over octet-stream/images (curl's `*/*` gets bytes)."""
    for media in _accepted(request):
        if media == "application/json":
            return True
        if media in _BY_MEDIA_TYPE or media in ("application/octet-stream", "image/*", "*/*"):
            return False
    return False


def image_format(request: Request, requested: OutputFormat | None) -> OutputFormat:
    if requested is not None:
        return requested
    for media in _accepted(request):
        if media in _BY_MEDIA_TYPE:
            return _BY_MEDIA_TYPE[media]
    return "png"


def media_type(fmt: OutputFormat) -> str:
    return MEDIA_TYPES[fmt]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
