"""FastAPI and Starlette are pinned in pyproject.toml to the minor versions that `service.app.direct`
(direct dispatch of the hot routes) and `service.app.deps.KeyedRoute` were checked against. These tests
state what the two rely on, so that a new version that changes any of it fails here first, with a
name, rather than as a subtly different answer on the hot path:

- the installed versions lie within the pins;
- the hooks they override: `FastAPI.__call__` (the ASGI entry point `ServiceApp` puts itself before),
  `APIRoute.get_route_handler` (the handler FastAPI builds every route's ASGI app from, for included
  routers too) and `APIRoute.__init__(dependencies=...)`;
- what the router leaves in the scope for the route (`route`, `endpoint`, `path_params`, `app`,
  `root_path`), which direct dispatch writes itself and the request context middleware reads;
- Starlette's order of exception handlers (status code first for an HTTPException, then the class's
  MRO; 500 and Exception belong to the server-error handler), which `ServiceApp._handler_for` mirrors;
- FastAPI solving an `Annotated[..., Depends(...)]` context under `app.dependency_overrides`, the hot
  routes' dependants holding that one dependency and nothing FastAPI would read from the request.
"""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from packaging.requirements import Requirement
from starlette.exceptions import HTTPException

from service.app.budget import PixelBudget
from service.app.config import Settings
from service.app.deps import (
    Handler,
    HotContext,
    KeyedRoute,
    RequestContext,
    get_registry,
    get_request_context,
)
from service.app.direct import ServiceApp
from service.app.errors import install_error_handlers
from service.app.metrics import Metrics
from service.app.middleware import RequestContextMiddleware
from service.app.routes import anomaly, codec
from service.inference.errors import ModelNotFound, ServiceError

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


# ---- versions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fastapi", "starlette"])
def test_the_installed_version_is_within_the_pin(name: str) -> None:
    service = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["service"]
    (pin,) = [r for r in map(Requirement, service) if r.name == name]
    upper = [s for s in pin.specifier if s.operator == "<"]
    assert upper and any(s.operator == ">=" for s in pin.specifier), f"{name} needs a lower and an upper bound: {pin}"
    lower_minor = next(s.version for s in pin.specifier if s.operator == ">=").split(".")[:2]
    upper_minor = upper[0].version.split(".")[:2]
    assert int(upper_minor[1]) == int(lower_minor[1]) + 1 and upper_minor[0] == lower_minor[0], (
        f"{name} is pinned to one minor version: {pin}")
    installed = metadata.version(name)
    assert pin.specifier.contains(installed, prereleases=True), f"{name} {installed} is outside {pin}"


# ---- the hooks overridden --------------------------------------------------------------------------
def test_the_hooks_direct_dispatch_overrides_have_the_signatures_it_expects() -> None:
    assert inspect.iscoroutinefunction(FastAPI.__call__)
    assert list(inspect.signature(FastAPI.__call__).parameters) == ["self", "scope", "receive", "send"]
    assert list(inspect.signature(APIRoute.get_route_handler).parameters) == ["self"]
    init = inspect.signature(APIRoute.__init__).parameters
    assert list(init)[1:3] == ["path", "endpoint"] and init["dependencies"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "telemetry" in inspect.signature(FastAPI.__init__).parameters  # main.py turns it off (direct bypasses it)
    app = FastAPI()
    assert app.dependency_overrides == {} and isinstance(app.dependency_overrides, dict)
    assert app.root_path == "" and isinstance(app.exception_handlers, dict)


def test_the_hot_routes_depend_on_the_context_alone() -> None:
    for router in (codec.router, anomaly.router):
        for route in router.routes:
            assert isinstance(route, KeyedRoute) and route.methods == {"POST"}
            assert [d.call for d in route.dependant.dependencies] == [get_request_context], route.path
            dependant = route.dependant
            assert not (dependant.path_params or dependant.query_params or dependant.header_params
                        or dependant.cookie_params or dependant.body_params) and route.body_field is None
            assert route.direct_handler() is not None


# ---- a bare app with one hot-shaped route ----------------------------------------------------------
class _SpiedRoute(KeyedRoute):
    """A KeyedRoute whose handler counts the requests FastAPI's router hands it."""

    calls = 0

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def spied(request: Request) -> Response:
            _SpiedRoute.calls += 1
            return await handler(request)

        return spied


def _app(*, direct: bool, root_path: str = "", error: Exception | None = None) -> tuple[ServiceApp, list[Any]]:
    """A ServiceApp as main.py builds it (state, error handlers, the request context middleware), with
    POST /probe taking the HotContext (it raises `error`, if any); `seen` collects (scope, context)."""
    seen: list[Any] = []
    router = APIRouter(route_class=_SpiedRoute)

    async def probe(ctx: HotContext) -> Response:
        seen.append((dict(ctx.request.scope), ctx))
        if error is not None:
            raise error
        return Response(b"ok")

    router.add_api_route("/probe", probe, methods=["POST"])
    app = ServiceApp()
    app.root_path = root_path  # what FastAPI's deprecated root_path argument sets; read by both paths
    metrics = Metrics()
    app.state.settings, app.state.registry = Settings(_env_file=None), "the registry"
    app.state.metrics, app.state.pixel_budget = metrics, PixelBudget(1)
    install_error_handlers(app)
    app.add_exception_handler(_Base, _teapot)
    app.add_exception_handler(418, _teapot)
    app.add_exception_handler(500, _teapot)
    app.add_exception_handler(Exception, _teapot)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.include_router(router)
    if direct:
        app.enable_direct_routes([router], metrics)
        assert app.direct_paths == ["/probe"]
    return app, seen


class _Base(Exception):
    pass


class _Child(_Base):
    pass


async def _teapot(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"handled": type(exc).__name__}, status_code=418)


def _post(app: ServiceApp, path: str = "/probe") -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path)

    return asyncio.run(call())


def test_the_router_hands_requests_to_keyed_routes_handler() -> None:
    app, seen = _app(direct=False)
    before = _SpiedRoute.calls
    assert _post(app).status_code == 200 and len(seen) == 1
    assert _SpiedRoute.calls == before + 1  # included routes run what get_route_handler built


def test_direct_dispatch_leaves_the_scope_the_router_leaves() -> None:
    scopes = {}
    for direct in (False, True):
        app, seen = _app(direct=direct, root_path="/api")
        assert _post(app).status_code == 200
        ((scope, ctx),) = seen
        scopes[direct] = scope
        assert scope["app"] is app and ctx.request.app is app and ctx.registry == "the registry"
        assert scope["root_path"] == "/api" and scope["path_params"] == {}
        # the route object the router was given (not a copy): the middleware labels metrics with its path
        assert isinstance(scope["route"], _SpiedRoute) and scope["route"].path == "/probe"
        assert scope["endpoint"] is scope["route"].endpoint
    assert scopes[True]["route"] is scopes[True]["app"]._direct["/probe"].route


@pytest.mark.parametrize("error", [
    ModelNotFound("no model x"), ServiceError("plain"), HTTPException(404, "gone"), HTTPException(418, "teapot"),
    HTTPException(500, "server"), _Child("by its base class"), KeyError("only Exception has a handler"),
], ids=lambda e: f"{type(e).__name__}{getattr(e, 'status_code', '')}")
def test_errors_find_the_handler_starlette_would(error: Exception) -> None:
    def answer(direct: bool) -> tuple[int, Any]:
        response = _post(_app(direct=direct, error=error)[0])
        body = response.json()
        if "error" in body:
            body["error"]["message"] = body["error"]["message"].split("quote request id")[0]
        return response.status_code, body

    assert answer(True) == answer(False)


@pytest.mark.parametrize("direct", [False, True], ids=["routed", "direct"])
def test_fastapi_solves_the_context_under_overrides(direct: bool) -> None:
    app, seen = _app(direct=direct)
    app.dependency_overrides[get_registry] = lambda: "an overridden registry"
    assert _post(app).status_code == 200
    assert seen[-1][1].registry == "an overridden registry"

    async def fixed(request: Request) -> RequestContext:
        return RequestContext(request, app.state.settings, "a fixed context", app.state.metrics,
                              app.state.pixel_budget, seen[-1][1].query)

    app.dependency_overrides.clear()
    app.dependency_overrides[get_request_context] = fixed
    assert _post(app).status_code == 200 and seen[-1][1].registry == "a fixed context"
    app.dependency_overrides.clear()
    assert _post(app).status_code == 200 and seen[-1][1].registry == "the registry"
