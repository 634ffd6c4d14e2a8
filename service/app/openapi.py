"""OpenAPI descriptions of the bodies the routes read themselves (streamed under the byte limit, so
they are not FastAPI body parameters) and of the error responses, for the interactive /docs."""

from __future__ import annotations

from typing import Any

from service.app.schemas import ErrorResponse

BINARY = {"type": "string", "format": "binary"}


def _multipart(description: str) -> dict[str, Any]:
    return {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "array", "items": BINARY, "description": description}},
            "required": ["file"],
        }
    }


IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One image as the raw body (`--data-binary @x.png -H 'Content-Type: image/png'`) or one or more "
            "files as multipart (`-F file=@x.png`; several files form a batch and get a JSON list). "
            "PNG, JPEG, WebP, BMP or TIFF, grey or colour."
        ),
        "content": {
            "multipart/form-data": _multipart("Image files (one or more)."),
            **{t: {"schema": BINARY} for t in ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff")},
        },
    }
}

STREAM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A bitstream made by /encode, raw (`--data-binary @x.aec`) or as multipart files.",
        "content": {
            "application/octet-stream": {"schema": BINARY},
            "multipart/form-data": _multipart("Bitstreams (one or more)."),
        },
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": "Error (stable JSON shape)."} for status in statuses}
