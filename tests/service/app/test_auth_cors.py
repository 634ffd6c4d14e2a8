"""API keys (constant-time, every key compared), which endpoints need them, and CORS (off by default)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from service_helpers import LiveServer, assert_error, live_server, to_bytes

from service.app import deps
from service.app.config import Settings

KEYS = "key-one,key-two"
ORIGIN = "http://demo.example:8080"


@pytest.fixture(scope="module", params=["open-probes", "locked-probes"])
def keyed(request, model_store) -> Iterator[LiveServer]:
    locked = request.param == "locked-probes"
    with live_server(probe="/healthz" if not locked else "/docs", models_dir=model_store.path,
                     default_model=model_store.tiny, api_keys=KEYS, probes_require_key=locked,
                     metrics_require_key=not locked, cors_origins=ORIGIN, reload_interval_s=0,
                     log_level="WARNING") as srv:
        yield srv


def test_keys_guard_the_api(keyed: LiveServer, model_store) -> None:
    digit = to_bytes(model_store.normal[0])
    with httpx.Client(base_url=keyed.url, timeout=30) as client:
        for path in ("/encode", "/reconstruct", "/anomaly-score", "/decode"):
            assert_error(client.post(path, content=digit), 401, "unauthorized")
            assert_error(client.post(path, content=digit, headers={"X-API-Key": "key-on"}), 401, "unauthorized")
        assert_error(client.get("/models"), 401, "unauthorized")
        assert_error(client.get("/models", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        assert client.post("/encode", content=digit, headers={"X-API-Key": "key-two"}).status_code == 200
        assert client.get("/models", headers={"Authorization": "Bearer key-one"}).status_code == 200
        # Docs and the demo page hold no data: always open (the page asks for a key to call the API).
        assert client.get("/docs").status_code == 200 and client.get("/").status_code == 200


def test_probe_and_metrics_keys_are_settings(keyed: LiveServer) -> None:
    settings = keyed.settings
    with httpx.Client(base_url=keyed.url, timeout=30) as client:
        for path, locked in (("/healthz", settings.probes_require_key), ("/readyz", settings.probes_require_key),
                             ("/metrics", settings.metrics_require_key)):
            anonymous = client.get(path)
            if locked:
                assert_error(anonymous, 401, "unauthorized")
                assert client.get(path, headers={"X-API-Key": "key-one"}).status_code == 200
            else:
                assert anonymous.status_code == 200, path


def test_openapi_declares_the_key_where_it_is_needed(keyed: LiveServer) -> None:
    spec = httpx.get(f"{keyed.url}/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerKey"}
    assert "401" in spec["paths"]["/encode"]["post"]["responses"]
    assert ("security" in spec["paths"]["/healthz"]["get"]) == keyed.settings.probes_require_key
    assert ("security" in spec["paths"]["/metrics"]["get"]) == keyed.settings.metrics_require_key


def test_cors_allows_the_configured_origin_only(keyed: LiveServer) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-api-key"}
    with httpx.Client(base_url=keyed.url, timeout=30) as client:
        ok = client.options("/encode", headers={"Origin": ORIGIN, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        evil = client.options("/encode", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
        # Actual responses, errors included, carry the header and expose the figures in X- headers.
        denied = client.post("/encode", content=b"x", headers={"Origin": ORIGIN})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN
        assert "x-bpp" in denied.headers["access-control-expose-headers"].lower()


def test_cors_is_off_by_default(client: httpx.Client) -> None:
    response = client.options("/encode", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code == 405
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": ORIGIN}).headers


def test_every_key_is_compared_in_constant_time(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)

    request = SimpleNamespace(headers={"x-api-key": "key-one"})
    settings = Settings(_env_file=None, api_keys="key-one,key-two,key-three")
    deps.require_api_key(request, settings)  # type: ignore[arg-type]
    assert [b for _, b in calls] == [b"key-one", b"key-two", b"key-three"]  # no early exit on a match


def test_cors_origins_are_validated() -> None:
    assert Settings(_env_file=None, cors_origins="https://a.example, http://b.example:81").cors_origins == [
        "https://a.example", "http://b.example:81"]
    for bad in ("https://a.example/", "a.example", "https://a.example/path"):
        with pytest.raises(ValueError):
            Settings(_env_file=None, cors_origins=bad)
