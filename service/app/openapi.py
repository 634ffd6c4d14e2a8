"""OpenAPI: the bodies the routes read themselves (streamed under the byte limit, so they are not
FastAPI body parameters), the error responses, and the fix-ups that make the served schema true to
what the service answers (checked by schemathesis in tests/service/app/test_schemathesis.py).

Also the docs pages: /docs (Swagger UI) and /redoc load their JavaScript and CSS from the app itself
(under /docs/assets, from the fastapi-offline package), not from a CDN, so they work on air-gapped
hosts and in clusters without egress (tested in headless Chromium with the network cut:
tests/service/app/test_docs_offline.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute

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

#: Every error `code` the service answers, by HTTP status (the README's table; tests/service/app/
#: test_openapi_docs.py checks the service's error classes are all here).
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("empty_body", "corrupt_image", "non_finite_pixels", "corrupt_bitstream", "invalid_multipart",
          "invalid_content_length", "client_disconnected", "model_required"),
    401: ("unauthorized",),
    404: ("model_not_found", "version_not_found", "not_found"),
    405: ("method_not_allowed",),
    408: ("header_timeout", "body_timeout"),
    409: ("anomaly_not_calibrated",),
    413: ("payload_too_large", "too_many_pixels", "image_metadata_too_large", "too_many_files"),
    415: ("unsupported_image", "unsupported_media_type"),
    422: ("invalid_request", "invalid_quality", "invalid_effort", "target_too_small", "image_size_rejected",
          "bitstream_model_mismatch"),
    431: ("headers_too_large",),
    500: ("internal_error",),
    503: ("no_models_loaded", "not_ready", "overloaded", "too_many_connections"),
    504: ("timeout",),
}


def error_description(status: int) -> str:
    codes = ERROR_CODES.get(status, ())
    listed = ", ".join(f"`{code}`" for code in codes)
    return "Error (stable JSON shape)" + (f"; `error.code` is one of {listed}." if codes else ".")


#: The figures of the raw-bytes answers, as response headers (JSON answers carry the same as fields).
HEADERS: dict[str, tuple[str, dict[str, Any]]] = {
    "X-Model": ("The model that answered.", {"type": "string"}),
    "X-Model-Version": ("Its version.", {"type": "integer"}),
    "X-Original-Width": ("Width of the original image (what /decode gives back).", {"type": "integer"}),
    "X-Original-Height": ("Height of the original image.", {"type": "integer"}),
    "X-Original-Channels": ("Channels of the original image: 1 grey, 3 colour.", {"type": "integer"}),
    "X-Size-Policy": ("The model's size policy: pad, resize or reject.", {"type": "string"}),
    "X-Size-Action": ("What the policy did to this image: none, padded or resized.", {"type": "string"}),
    "X-Bpp": (("Bits per pixel of the stream (header included) over the original pixels; on /reconstruct only "
              "with ?max_bytes=/?target_bpp=."), {"type": "number"}),
    "X-Bytes": ("Length of the stream in bytes, header included; on /reconstruct only with a size target.",
                {"type": "integer"}),
    "X-Quality": ("Variable-rate models: the quality coded at (two decimals); absent for single-rate models.",
                  {"type": "number"}),
    "X-Effort": ("With ?effort= above 0: the encoder effort used (latent refinement steps / steps_per_effort).",
                 {"type": "integer"}),
    "X-Search-Encodes": ("With ?max_bytes=/?target_bpp=: how many encodes the search ran (at most 12).",
                         {"type": "integer"}),
    "X-MSE": ("MSE of the reconstruction vs the input as the model saw it, pixels in [0, 1].", {"type": "number"}),
    "X-PSNR": ("PSNR in dB, `inf` when the reconstruction is exact.", {"type": "string"}),
    "X-MS-SSIM": (("MS-SSIM in [0, 1] (tf.image.ssim_multiscale, default settings); absent for images under 161 px "
                  "on a side or over AEC_MS_SSIM_MAX_PIXELS."), {"type": "number"}),
    "X-Request-ID": (("The request's id (the client's X-Request-ID when it sent one); quote it when reporting a "
                     "problem."), {"type": "string"}),
}


def success_headers(*names: str) -> dict[str, dict[str, Any]]:
    """OpenAPI `headers` of a 200 answer."""
    return {name: {"description": HEADERS[name][0], "schema": HEADERS[name][1]} for name in names}


_REQUEST_ID = success_headers("X-Request-ID")["X-Request-ID"]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": error_description(status)} for status in statuses
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
    install_docs(app)


#: Swagger UI's and ReDoc's built assets (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js,
#: favicon.png), as the fastapi-offline package ships and updates them.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs/assets"
#: The docs pages may load and call nothing but this app. Chromium then never even tries ReDoc's one
#: remote fetch (the "API docs by Redocly" footer logo, cdn.redoc.ly, hard-coded, no option to turn it
#: off); FastAPI's page templates use inline scripts, Swagger UI inline styles, ReDoc a blob: worker.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
            "frame-ancestors 'self'")


def install_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc with assets from DOCS_ASSETS_URL instead of FastAPI's CDN defaults.

    FastAPI adds its CDN-backed pages when the app is constructed; they are swapped here for pages
    that name only this app's URLs (the root path included, behind a proxy). The favicon and Google
    Fonts are local or off too, Swagger UI's online validator badge is off (it calls
    validator.swagger.io), and a Content-Security-Policy (DOCS_CSP) keeps the pages on this origin."""
    docs_url, redoc_url = app.docs_url, app.redoc_url
    if docs_url is None and redoc_url is None:
        return
    app.router.routes[:] = [r for r in app.router.routes if not _is_cdn_docs_route(r, {docs_url, redoc_url})]
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    parameters = {**(app.swagger_ui_parameters or {}), "validatorUrl": None}

    if docs_url is not None:
        @app.get(docs_url, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return _with_csp(get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{app.swagger_ui_oauth2_redirect_url}"
                if app.swagger_ui_oauth2_redirect_url else None,
                swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                swagger_ui_parameters=parameters,
            ))

    if redoc_url is not None:
        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return _with_csp(get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            ))


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _is_cdn_docs_route(route: BaseRoute, paths: set[str | None]) -> bool:
    """FastAPI's own /docs and /redoc page routes (the OAuth2 redirect page needs no assets and stays)."""
    return getattr(route, "path", None) in paths and not getattr(route, "include_in_schema", True)


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
                responses["422"] = {"description": error_description(422),
                                    "content": {"application/json": {"schema": _ERROR_REF}}}
            for answer in responses.values():  # every answer carries the request id
                answer.setdefault("headers", {}).setdefault("X-Request-ID", _REQUEST_ID)
            body = operation.get("requestBody", {}).get("content", {}).get(_MULTIPART)
            if body:
                body["schema"]["properties"]["file"]["maxItems"] = settings.max_files
            if settings.api_keys and _needs_key(path, settings):
                operation["security"] = [{"ApiKeyHeader": []}, {"BearerKey": []}]
                responses["401"] = {"description": "Missing or wrong API key; " + error_description(401),
                                    "content": {"application/json": {"schema": _ERROR_REF}}}


def _needs_key(path: str, settings: Settings) -> bool:
    if path in ("/healthz", "/readyz"):
        return settings.probes_require_key
    if path == "/metrics":
        return settings.metrics_require_key
    return True
