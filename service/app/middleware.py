"""Per-request context as plain ASGI middleware: request id in and out, access log, metrics, and the
catch-all that turns a bug into a logged 500 JSON error (never a bare traceback or a dropped socket).

Plain ASGI rather than BaseHTTPMiddleware so streaming bodies pass through untouched and the request
id context variable is visible to everything the route awaits.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app.logs import request_id_var
from service.app.metrics import Metrics

log = logging.getLogger("service.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method"), scope.get("path")  # as the client sent them (before /v1 is cut)
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_ID.match(incoming) else os.urandom(16).hex()  # uuid4's entropy, less work
        token = request_id_var.set(request_id)
        self.metrics.in_flight.inc()
        started = time.perf_counter()
        status, model, response_started = 500, "", False

        async def send_with_id(message: Message) -> None:
            nonlocal status, model, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                model = next((v.decode("latin-1") for k, v in headers if k.lower() == b"x-model"), "")
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error serving %s %s", method, path)
            if response_started:
                raise
            body = json.dumps(
                {"error": {"code": "internal_error", "message": f"internal error; quote request id {request_id}"}}
            ).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, model or "none", str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            log.info(
                "%s %s %s %.1fms",  # the path may hold anything a client sent: the log handler escapes it
                method,
                path,
                status,
                elapsed * 1000,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 2), "model": model or None},
            )
            request_id_var.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


#: Every API route is served under this prefix too (`VersionPrefixMiddleware`, `direct.ServiceApp`).
API_PREFIX = "/v1"


def unprefixed(path: str, prefix: str = API_PREFIX) -> str:
    """`path` without a leading `prefix` segment (`/v1/encode` → `/encode`; `/v1x` stays)."""
    return path[len(prefix):] if path.startswith(prefix + "/") else path


class VersionPrefixMiddleware:
    """Serve every API route under `/v1/...` too, by stripping the prefix before routing.

    Cheaper than mounting the router twice: Starlette matches routes one by one, so a second copy of
    every route is a second set of regex matches on each request (bench/serve.py).
    """

    def __init__(self, app: ASGIApp, prefix: str = API_PREFIX) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # In place, not a copy: the route the router matches is recorded on this scope, and the request
        # context around it reads it there (a copy counted every /v1 request as endpoint="unmatched").
        if scope["type"] == "http" and (path := unprefixed(scope["path"], self.prefix)) != scope["path"]:
            scope["path"], scope["raw_path"] = path, path.encode("latin-1")
        await self.app(scope, receive, send)
