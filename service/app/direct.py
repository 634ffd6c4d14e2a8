"""Direct dispatch of the hot routes: `ServiceApp`, a FastAPI app that sends POST /encode, /decode,
/reconstruct and /anomaly-score (and their /v1 twins) straight to their handlers.

Why: with small images the event loop, not TensorFlow, bounds throughput, and a GIL profile of the server
under load (py-spy --gil, bench/serve.py /reconstruct at c=64) put ~20% of the loop's time per request in
the framework's plumbing between the socket and the endpoint: a dozen nested ASGI layers (error and
exception middleware, exit stacks, body-limit and telemetry wrappers), route matching against every
route, and a second exception wrapper around the handler. For a route whose endpoint needs no
dependency solving (`deps.KeyedRoute.direct_handler`: it takes the `HotContext`, built from `app.state`
exactly as its provider builds it, or only the `Request`) none of it does any work.

What a direct request still gets, the same as through the router: `RequestContextMiddleware` (request id,
access log, metrics, the catch-all 500), the `/v1` prefix, the route's own handler (which checks the API
key first), and the app's exception handlers for what the handler raises. Everything else (GET routes,
docs, static files, any route with parameters FastAPI injects, lifespan) goes through FastAPI as usual;
so does every request while CORS is on, since its headers come from middleware, and every request while
the app has `dependency_overrides` (tests), so that FastAPI solves the hot routes' `HotContext` with
them, as it does for every other route.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from service.app.deps import Handler, KeyedRoute
from service.app.metrics import Metrics
from service.app.middleware import RequestContextMiddleware, unprefixed


@dataclass(frozen=True)
class DirectRoute:
    route: KeyedRoute
    app: RequestContextMiddleware  # the request context around this route's handler


class ServiceApp(FastAPI):
    """FastAPI with `enable_direct_routes`; until it is called every request goes through FastAPI."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct: dict[str, DirectRoute] = {}

    def enable_direct_routes(self, routers: Iterable[APIRouter], metrics: Metrics) -> None:
        """Dispatch the qualifying POST routes of `routers` directly (see the module docstring). The
        routers must be included at the root, with no prefix or dependencies."""
        self._direct = {
            route.path: DirectRoute(route, RequestContextMiddleware(partial(self._dispatch, handler), metrics=metrics))
            for router in routers
            for route in router.routes
            if isinstance(route, KeyedRoute) and route.methods == {"POST"}
            and (handler := route.direct_handler()) is not None
        }

    @property
    def direct_paths(self) -> list[str]:
        return sorted(self._direct)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._direct and scope["type"] == "http" and scope["method"] == "POST" and not self.dependency_overrides:
            target = self._direct.get(unprefixed(scope["path"]))
            if target is not None:
                if self.root_path:
                    scope["root_path"] = self.root_path
                scope["app"] = self
                scope["route"], scope["endpoint"], scope["path_params"] = target.route, target.route.endpoint, {}
                await target.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _dispatch(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            on_error = self._handler_for(exc)
            if on_error is None:
                raise  # RequestContextMiddleware logs it and answers a JSON 500
            response = on_error(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable | None:
        """The app's handler for `exc`, found as Starlette's ExceptionMiddleware finds it (what is
        registered for 500 or Exception is the server-error handler's, outside it)."""
        handlers = self.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers and cls is not Exception:
                return handlers[cls]
        return None
