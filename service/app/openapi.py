"""OpenAPI: the bodies the routes read themselves (streamed under the byte limit, so they are not
FastAPI body parameters), the error responses, and the fix-ups that make the served schema true to
what the service answers (checked by schemathesis in tests/service/test_schemathesis.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.app.config import Settings
from service.app.schemas import ErrorResponse

BINARY = {"type": "string", "format": "binary"}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_MULTIPART = "multipart/form-data"


def _multipart(description: str) -> dict[str, Any]:
    return {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "array", "items": BINARY, "minItems": 1, "description": description}},
            "required": ["file"],
        }
    }


IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One image as the raw body (`--data-binary @x.png -H 'Content-Type: image/png'`) or one or more "
            "files as multipart (`-F file=@x.png`; several files form a batch and get a JSON list). "
            "PNG, JPEG, WebP, BMP or TIFF, grey or colour; other bytes are refused with 415 (or 400 when a "
            "known format is truncated)."
        ),
        "content": {
            _MULTIPART: _multipart("Image files (one or more)."),
            **{t: {"schema": BINARY} for t in ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff")},
        },
    }
}

STREAM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "A bitstream made by /encode, raw (`--data-binary @x.aec`) or as multipart files; anything else "
            "is refused with 400 corrupt_bitstream."
        ),
        "content": {
            "application/octet-stream": {"schema": BINARY},
            _MULTIPART: _multipart("Bitstreams (one or more)."),
        },
    }
}

#: What every POST route can answer besides its own errors: overload and the inference budget.
BUSY = (503, 504)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": "Error (stable JSON shape)."} for status in statuses
    }
    if 503 in responses:
        responses[503]["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying (when overloaded).",
                            "schema": {"type": "integer"}},
        }
    return responses


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve a schema that matches this deployment: our error shape for 422, the configured file limit,
    and the API key as a security scheme only when keys are configured."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _fix(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def _fix(schema: dict[str, Any], settings: Settings) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault("ErrorResponse", ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}"))
    for defs_name, defs in list(components["ErrorResponse"].pop("$defs", {}).items()):
        components.setdefault(defs_name, defs)
    if settings.api_keys:
        schema["components"]["securitySchemes"] = {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerKey": {"type": "http", "scheme": "bearer"},
        }
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:  # FastAPI declares its own validation shape; we answer ours
                responses["422"] = {"description": "Invalid request (stable JSON shape).",
                                    "content": {"application/json": {"schema": _ERROR_REF}}}
            body = operation.get("requestBody", {}).get("content", {}).get(_MULTIPART)
            if body:
                body["schema"]["properties"]["file"]["maxItems"] = settings.max_files
            if settings.api_keys and _needs_key(path, settings):
                operation["security"] = [{"ApiKeyHeader": []}, {"BearerKey": []}]
                responses["401"] = {"description": "Missing or wrong API key.",
                                    "content": {"application/json": {"schema": _ERROR_REF}}}


def _needs_key(path: str, settings: Settings) -> bool:
    if path in ("/healthz", "/readyz"):
        return settings.probes_require_key
    if path == "/metrics":
        return settings.metrics_require_key
    return True
