"""Direct dispatch of the hot routes (`service.app.direct`) answers exactly as FastAPI's router does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import LiveServer, assert_error, live_server, to_bytes
from starlette.exceptions import HTTPException

from service.app.config import Settings
from service.app.deps import KeyedRoute
from service.app.direct import ServiceApp
from service.app.errors import install_error_handlers
from service.app.main import create_app
from service.app.metrics import Metrics
from service.inference.errors import ModelNotFound

HOT = ["/anomaly-score", "/compare", "/decode", "/encode", "/reconstruct"]  # the POST routes taking HotContext


def test_the_hot_routes_and_only_they_go_direct() -> None:
    assert create_app(Settings(_env_file=None)).direct_paths == HOT
    # CORS headers come from middleware: with CORS on, every request takes FastAPI's path
    assert create_app(Settings(_env_file=None, cors_origins="http://a.example")).direct_paths == []


@pytest.fixture(scope="module")
def routed(model_store) -> Iterator[LiveServer]:
    """A server whose requests all go through FastAPI's router (CORS on, for an origin never sent)."""
    with live_server(models_dir=model_store.path, default_model=model_store.tiny, reload_interval_s=0,
                     cors_origins="http://elsewhere.example", log_level="WARNING") as srv:
        yield srv


def _answer(response: httpx.Response) -> tuple:
    # per-request values, and the `Vary: Origin` the routed server's CORS middleware adds
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date", "vary")}
    body = response.json() if response.headers.get("content-type") == "application/json" else response.content
    return response.status_code, headers, body


def test_direct_and_routed_answers_are_the_same(server: LiveServer, routed: LiveServer, model_store) -> None:
    assert server.app.direct_paths == HOT and routed.app.direct_paths == []
    digit = to_bytes(model_store.normal[0])
    requests = [
        ("/reconstruct", {"content": digit}),
        ("/v1/reconstruct", {"content": digit, "headers": {"Accept": "application/json"}}),
        ("/encode", {"files": [("file", ("a.png", digit, "image/png")), ("file", ("b.png", digit, "image/png"))]}),
        ("/anomaly-score", {"content": digit}),
        ("/reconstruct", {"content": b""}),  # empty body
        ("/reconstruct", {"content": b"not an image"}),
        ("/reconstruct?model=nope", {"content": digit}),
        ("/encode?version=abc", {"content": digit}),
        ("/decode", {"content": b"AEC garbage"}),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as direct, httpx.Client(base_url=routed.url, timeout=30) as via:
        for path, kwargs in requests:
            ours, theirs = direct.post(path, **kwargs), via.post(path, **kwargs)
            assert ours.headers["x-request-id"] and theirs.headers["x-request-id"]
            (status, headers, body), (their_status, their_headers, their_body) = _answer(ours), _answer(theirs)
            assert (status, body) == (their_status, their_body), path
            assert headers == their_headers, (path, set(headers.items()) ^ set(their_headers.items()))
        encoded = direct.post("/encode", content=digit).content
        assert _answer(direct.post("/decode", content=encoded)) == _answer(via.post("/decode", content=encoded))
        # a method the route does not have still gets FastAPI's 405, a GET its route
        assert_error(direct.get("/reconstruct"), 405, "method_not_allowed")
        assert direct.get("/v1/models").status_code == 200


def _scraped(client: httpx.Client, path: str) -> float:
    """aec_requests_total of `path` answered 200, summed over models."""
    return sum(sample.value for family in text_string_to_metric_families(client.get("/metrics").text)
               for sample in family.samples
               if sample.name == "aec_requests_total" and sample.labels["endpoint"] == path
               and sample.labels["status"] == "200")


def test_direct_requests_are_counted_under_their_route(client: httpx.Client, model_store) -> None:
    before = _scraped(client, "/reconstruct")
    assert client.post("/v1/reconstruct", content=to_bytes(model_store.normal[0])).status_code == 200
    assert _scraped(client, "/reconstruct") == before + 1


def _app_raising(error: Exception) -> ServiceApp:
    """A bare ServiceApp with one direct route whose handler raises `error`."""
    router = APIRouter(route_class=KeyedRoute)

    async def boom(request: Request) -> Response:
        raise error

    router.add_api_route("/boom", boom, methods=["POST"])
    app = ServiceApp()
    app.state.settings = Settings(_env_file=None)
    install_error_handlers(app)
    app.include_router(router)
    app.enable_direct_routes([router], Metrics())
    assert app.direct_paths == ["/boom"]
    return app


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(ModelNotFound("no model x"), 404, "model_not_found"), (HTTPException(418, "teapot"), 418, None),
     (RuntimeError("a bug"), 500, "internal_error")],
)
def test_direct_errors_go_through_the_apps_handlers(error: Exception, status: int, code: str | None) -> None:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app_raising(error), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/boom")

    response = asyncio.run(call())
    assert response.status_code == status
    assert response.headers["x-request-id"]
    if code is not None:
        assert_error(response, status, code)
    if status == 500:
        assert response.headers["x-request-id"] in response.json()["error"]["message"]
