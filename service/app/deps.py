"""Dependencies as `Annotated` aliases: routes declare what they need, tests override the providers.

Every route reaches the app's state (settings, registry, metrics, pixel budget) through the providers
here. The hot routes (POST /encode, /decode, /reconstruct, /anomaly-score) take one dependency,
`HotContext`: a `RequestContext` holding all of that plus the parsed query, made after the API key
is checked. `app.dependency_overrides` works on them as on any route: override `get_request_context`,
or any provider it depends on (`get_settings`, `get_registry`, ...), and the next request sees it.
"""

from __future__ import annotations

import hmac
import inspect
import typing
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response, params
from fastapi.routing import APIRoute

from service.app.budget import PixelBudget
from service.app.config import Settings
from service.app.metrics import Metrics
from service.app.query import HotQuery
from service.app.query import parse as parse_query
from service.inference.errors import Unauthorized
from service.inference.registry import LoadedModel, ModelRegistry

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_pixel_budget(request: Request) -> PixelBudget:
    return request.app.state.pixel_budget


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PixelBudgetDep = Annotated[PixelBudget, Depends(get_pixel_budget)]


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


async def check_api_key(request: Request, settings: SettingsDep) -> None:
    """`require_api_key` as a dependency (the first of every `KeyedRoute` FastAPI solves)."""
    require_api_key(request, settings)


async def require_api_key_for_probes(request: Request, settings: SettingsDep) -> None:
    """/healthz and /readyz stay open for orchestrators unless AEC_PROBES_REQUIRE_KEY is set."""
    if settings.probes_require_key:
        require_api_key(request, settings)


async def require_api_key_for_metrics(request: Request, settings: SettingsDep) -> None:
    """/metrics stays open for scrapers unless AEC_METRICS_REQUIRE_KEY is set."""
    if settings.metrics_require_key:
        require_api_key(request, settings)


ProbeKeyDep = Depends(require_api_key_for_probes)
MetricsKeyDep = Depends(require_api_key_for_metrics)


# ---- the hot routes' one dependency ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a hot route works with besides its body: the request (body, Accept), the app's settings,
    registry, metrics and pixel budget, and the query, parsed (`service.app.query`)."""

    request: Request
    settings: Settings
    registry: ModelRegistry
    metrics: Metrics
    pixel_budget: PixelBudget
    query: HotQuery

    def model(self) -> LoadedModel:
        """The model the query names (`?model=`, `?version=`; else the default model, newest version).
        /decode does not call it: there the stream names the model."""
        return self.registry.resolve(self.query.model, self.query.version)


def request_context(request: Request, settings: Settings, registry: ModelRegistry, metrics: Metrics,
                    pixel_budget: PixelBudget) -> RequestContext:
    """The API key first (a caller without one learns nothing, not even whether its query is valid),
    then the query string."""
    require_api_key(request, settings)
    return RequestContext(request, settings, registry, metrics, pixel_budget, parse_query(request))


async def get_request_context(request: Request, settings: SettingsDep, registry: RegistryDep, metrics: MetricsDep,
                              pixel_budget: PixelBudgetDep) -> RequestContext:
    """The provider of `HotContext` (what tests override)."""
    return request_context(request, settings, registry, metrics, pixel_budget)


def context_from_state(request: Request) -> RequestContext:
    """`get_request_context` without FastAPI's dependency solver: what it returns while nothing is
    overridden (each provider it depends on reads `app.state`)."""
    state = request.app.state
    return request_context(request, state.settings, state.registry, state.metrics, state.pixel_budget)


HotContext = Annotated[RequestContext, Depends(get_request_context)]


class KeyedRoute(APIRoute):
    """A route that checks the API key before its endpoint runs (`APIRouter(route_class=KeyedRoute)`).

    Two endpoint shapes need no dependency solving, and their handler (`direct_handler`) calls them
    without FastAPI's: the hot routes, `async def f(ctx: HotContext) -> <a Response>`, get the context
    from `context_from_state` (the same context the provider builds, API key check included), and
    `async def f(request: Request) -> <a Response>` gets the request after the key check. `direct.ServiceApp`
    dispatches their POST routes straight to that handler. Why: FastAPI's request handler parses cookies,
    opens exit stacks and solves the dependency graph for every request, ~20% of the event loop's CPU per
    request on the hot routes under load (py-spy, bench/serve.py).

    While the app has any `dependency_overrides` (tests), FastAPI's own handler runs instead and solves
    `HotContext`, so the overrides take effect as on every other route. Any other endpoint is FastAPI's
    as usual, with the key check (`check_api_key`) as its first dependency. Either way the key is checked
    before the body or the query is read, so a caller without one learns nothing.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], *, dependencies: Sequence[params.Depends] | None = None,
                 **kwargs: Any) -> None:
        if _shape(endpoint) is None:
            dependencies = [Depends(check_api_key), *(dependencies or [])]
        super().__init__(path, endpoint, dependencies=dependencies, **kwargs)

    def direct_handler(self) -> Handler | None:
        """The endpoint as a `Request → Response` handler that needs no dependency solving; None when
        FastAPI must solve its parameters."""
        endpoint, shape = self.endpoint, _shape(self.endpoint)
        if shape == "context":

            async def with_context(request: Request) -> Response:
                return await endpoint(context_from_state(request))

            return with_context
        if shape == "request":

            async def keyed(request: Request) -> Response:
                require_api_key(request, request.app.state.settings)
                return await endpoint(request)

            return keyed
        return None

    def get_route_handler(self) -> Handler:
        solved = super().get_route_handler()
        direct = self.direct_handler()
        if direct is None:
            return solved
        if _shape(self.endpoint) == "request":
            return direct

        async def context_handler(request: Request) -> Response:
            if request.app.dependency_overrides:  # FastAPI solves HotContext, honouring them
                return await solved(request)
            return await direct(request)

        return context_handler


def _shape(endpoint: Callable[..., Any]) -> str | None:
    """"context" for `async def f(ctx: HotContext) -> <a Response>`, "request" for
    `async def f(request: Request) -> <a Response>`, else None (FastAPI solves its parameters)."""
    if not inspect.iscoroutinefunction(endpoint):
        return None
    hints = typing.get_type_hints(endpoint, include_extras=True)
    names = list(inspect.signature(endpoint).parameters)
    returns = hints.get("return")
    if len(names) != 1 or not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    hint = hints.get(names[0])
    if hint is Request:
        return "request"
    if hint == HotContext:
        return "context"
    return None
