"""The hot routes' one seam (`deps.HotContext`): `app.dependency_overrides` takes effect on POST routes as
on GET routes, on the direct path (`server`: CORS off) and through FastAPI's router (CORS on) alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest
from fastapi import Request
from service_helpers import LiveServer, assert_error, live_server, to_bytes

from service.app.config import Settings
from service.app.deps import (
    MetricsDep,
    PixelBudgetDep,
    RegistryDep,
    RequestContext,
    SettingsDep,
    get_registry,
    get_request_context,
    get_settings,
)
from service.inference.registry import ModelRegistry


@pytest.fixture(scope="module")
def routed(model_store) -> Iterator[LiveServer]:
    """A server whose requests all go through FastAPI's router (CORS on, for an origin never sent)."""
    with live_server(models_dir=model_store.path, default_model=model_store.tiny, reload_interval_s=0,
                     cors_origins="http://elsewhere.example", log_level="WARNING") as srv:
        yield srv


@pytest.fixture(params=["direct", "routed"])
def srv(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """Each server in turn, its overrides cleared after the test (the direct one is shared)."""
    server: LiveServer = request.getfixturevalue("server" if request.param == "direct" else "routed")
    assert bool(server.app.direct_paths) == (request.param == "direct")
    try:
        yield server
    finally:
        server.app.dependency_overrides.clear()


def test_overriding_the_context_changes_what_a_post_route_serves(srv: LiveServer, model_store) -> None:
    digit = to_bytes(model_store.normal[0])
    seen: list[RequestContext] = []

    async def pinned(request: Request, settings: SettingsDep, registry: RegistryDep, metrics: MetricsDep,
                     pixel_budget: PixelBudgetDep) -> RequestContext:
        """The real context, with the query's model replaced: what a test might pin."""
        ctx = await get_request_context(request, settings, registry, metrics, pixel_budget)
        seen.append(ctx)
        return dataclasses.replace(ctx, query=dataclasses.replace(ctx.query, model=model_store.tiny_reject))

    with httpx.Client(base_url=srv.url, timeout=30) as client:
        assert client.post("/encode", content=digit).headers["x-model"] == model_store.tiny
        srv.app.dependency_overrides[get_request_context] = pinned
        for path in ("/encode", "/v1/reconstruct"):
            response = client.post(path, content=digit)
            assert response.status_code == 200 and response.headers["x-model"] == model_store.tiny_reject, path
        assert len(seen) == 2 and seen[0].query.model is None and seen[0].settings is srv.app.state.settings
        srv.app.dependency_overrides.clear()
        assert client.post("/encode", content=digit).headers["x-model"] == model_store.tiny
        assert len(seen) == 2  # without overrides the provider is not called


def test_a_provider_override_reaches_post_routes_as_it_reaches_get_routes(srv: LiveServer, model_store) -> None:
    digit = to_bytes(model_store.normal[0])

    def broken_registry() -> ModelRegistry:
        raise RuntimeError("a bug")

    with httpx.Client(base_url=srv.url, timeout=30) as client:
        srv.app.dependency_overrides[get_registry] = broken_registry
        for method, path in (("GET", "/models"), ("POST", "/encode"), ("POST", "/decode"), ("POST", "/anomaly-score")):
            response = client.request(method, path, content=digit, headers={"X-Request-ID": "bug-2"})
            body = assert_error(response, 500, "internal_error")
            assert "bug-2" in body["error"]["message"], path
        srv.app.dependency_overrides.clear()

        # the API key check is part of the seam: settings with a key, overridden, lock GET and POST routes
        keyed = Settings(_env_file=None, models_dir=model_store.path, api_keys=["s3cret"])
        srv.app.dependency_overrides[get_settings] = lambda: keyed
        assert_error(client.get("/models"), 401, "unauthorized")
        assert_error(client.post("/reconstruct", content=digit), 401, "unauthorized")
        assert client.post("/reconstruct", content=digit, headers={"X-API-Key": "s3cret"}).status_code == 200
