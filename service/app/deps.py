"""Dependencies as `Annotated` aliases: routes declare what they need, tests override the providers."""

from __future__ import annotations

import hmac
import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from service.app.config import Settings
from service.app.metrics import Metrics
from service.inference.errors import Unauthorized
from service.inference.registry import LoadedModel, ModelRegistry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

def model_for(request: Request, model: str | None, version: int | None) -> LoadedModel:
    """The hot routes' model lookup (their query is parsed by `service.app.query`, not FastAPI)."""
    registry: ModelRegistry = request.app.state.registry
    return registry.resolve(model, version)


def settings_of(request: Request) -> Settings:
    """Settings for the hot routes, without a dependency to solve (see `KeyedRoute`)."""
    return request.app.state.settings


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """When AEC_API_KEYS is set, require `X-API-Key: <key>` or `Authorization: Bearer <key>`.

    Every configured key is compared in constant time (hmac.compare_digest) and the loop never stops
    early, so the response time says nothing about how much of a key, or which key, matched.
    """
    if not settings.api_keys:
        return
    offered = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not offered and auth.lower().startswith("bearer "):
        offered = auth[7:].strip()
    candidate = offered.encode("utf-8")
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(candidate, key.encode("utf-8"))
    if not matched:
        raise Unauthorized("a valid API key is required (X-API-Key header or Authorization: Bearer)")


async def require_api_key_for_probes(request: Request, settings: SettingsDep) -> None:
    """/healthz and /readyz stay open for orchestrators unless AEC_PROBES_REQUIRE_KEY is set."""
    if settings.probes_require_key:
        require_api_key(request, settings)


async def require_api_key_for_metrics(request: Request, settings: SettingsDep) -> None:
    """/metrics stays open for scrapers unless AEC_METRICS_REQUIRE_KEY is set."""
    if settings.metrics_require_key:
        require_api_key(request, settings)


class KeyedRoute(APIRoute):
    """A route that calls `require_api_key` before its handler (`APIRouter(route_class=KeyedRoute)`).

    What `dependencies=[Depends(...)]` would do, without a dependency for FastAPI to solve on every
    request. And an endpoint that takes only the `Request` (the hot routes, which read their own body
    and query) is called directly: FastAPI's request handler would still parse cookies, open an exit
    stack and solve an empty dependency set for it, ~20% of the event loop's CPU per request under load
    (py-spy, bench/serve.py). Other endpoints keep FastAPI's handler. Either way the key is checked
    before the body or the query is read, so a caller without one learns nothing.
    """

    @property
    def takes_only_request(self) -> bool:
        """Whether the endpoint is `async def f(request: Request) -> <a Response>` (called directly)."""
        return _takes_only_request(self.endpoint)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.takes_only_request:
            handler = self.endpoint
        else:
            handler = super().get_route_handler()

        async def keyed(request: Request) -> Response:
            require_api_key(request, request.app.state.settings)
            return await handler(request)

        return keyed


def _takes_only_request(endpoint: Callable[..., Any]) -> bool:
    """`async def f(request: Request) -> <a Response>`: nothing for FastAPI to inject or validate."""
    if not inspect.iscoroutinefunction(endpoint):
        return False
    hints = typing.get_type_hints(endpoint)
    params = list(inspect.signature(endpoint).parameters)
    returns = hints.get("return")
    return (len(params) == 1 and hints.get(params[0]) is Request
            and isinstance(returns, type) and issubclass(returns, Response))


ProbeKeyDep = Depends(require_api_key_for_probes)
MetricsKeyDep = Depends(require_api_key_for_metrics)
