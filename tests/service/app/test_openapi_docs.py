"""What /openapi.json promises: the success headers (X-Bpp, X-PSNR, X-MS-SSIM, X-Quality, ...) of every
codec route, the size-target parameters, every error code by status; and the default model of a store
with several models and no AEC_DEFAULT_MODEL (the first by name, stated in /models), against a live
server with the fixture store."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import httpx
import pytest
from service_helpers import live_server, to_bytes

from service.app import openapi
from service.inference import errors as inference_errors


@pytest.fixture(scope="module")
def live(model_store) -> Iterator[httpx.Client]:
    """The fixture store (codec-tiny, tiny, tiny-reject) served with no AEC_DEFAULT_MODEL."""
    with (live_server(models_dir=model_store.path, reload_interval_s=0, log_level="WARNING") as srv,
          httpx.Client(base_url=srv.url, timeout=60) as client):
        yield client


@pytest.fixture(scope="module")
def schema(live: httpx.Client) -> dict:
    response = live.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _headers(schema: dict, path: str) -> set[str]:
    return set(schema["paths"][path]["post"]["responses"]["200"]["headers"])


def test_success_headers_are_documented(schema: dict) -> None:
    size = {"X-Model", "X-Model-Version", "X-Original-Width", "X-Original-Height", "X-Original-Channels"}
    assert size | {"X-Size-Policy", "X-Size-Action", "X-Bpp", "X-Bytes", "X-Quality", "X-Search-Encodes",
                   "X-Request-ID"} <= _headers(schema, "/encode")
    assert size | {"X-Quality"} <= _headers(schema, "/decode")
    assert size | {"X-MSE", "X-PSNR", "X-MS-SSIM", "X-Quality", "X-Bytes", "X-Bpp"} <= _headers(schema, "/reconstruct")
    assert "161 px" in schema["paths"]["/reconstruct"]["post"]["responses"]["200"]["headers"]["X-MS-SSIM"]["description"]
    for path in ("/encode", "/reconstruct"):
        names = {p["name"] for p in schema["paths"][path]["post"]["parameters"]}
        assert {"quality", "max_bytes", "target_bpp"} <= names


def test_the_headers_a_route_answers_are_the_documented_ones(live: httpx.Client, schema: dict, model_store) -> None:
    body = to_bytes(model_store.normal[0])
    for path in ("/encode", "/reconstruct"):
        response = live.post(f"{path}?model=tiny&max_bytes=100000", content=body)
        assert response.status_code == 200, response.text
        sent = {name.lower() for name in response.headers if name.lower().startswith("x-")}
        assert sent <= {name.lower() for name in _headers(schema, path)}, (path, sent)


def test_every_error_code_is_documented_at_its_status(schema: dict) -> None:
    classes = [c for _, c in inspect.getmembers(inference_errors, inspect.isclass)
               if issubclass(c, inference_errors.ServiceError) and c is not inference_errors.ServiceError]
    for cls in classes:
        assert cls.code in openapi.ERROR_CODES[cls.status], (cls.__name__, cls.code, cls.status)
    described = {status: answer["description"] for item in schema["paths"].values() for op in item.values()
                 for status, answer in op.get("responses", {}).items() if status[0] in "45"}
    assert "`target_too_small`" in described["422"] and "`invalid_quality`" in described["422"]
    assert "`model_not_found`" in described["404"] and "`overloaded`" in described["503"]
    encode = schema["paths"]["/encode"]["post"]["responses"]
    for status in ("400", "413", "415", "422", "503", "504"):
        codes = openapi.ERROR_CODES[int(status)]
        assert all(f"`{code}`" in encode[status]["description"] for code in codes), status


def test_several_models_and_no_setting_default_to_the_first_by_name(live: httpx.Client, model_store) -> None:
    listing = live.get("/models").json()
    assert listing["default_model"] == "codec-tiny" and listing["default_source"] == "first_by_name"
    assert [m["name"] for m in listing["models"] if m["is_default"]] == ["codec-tiny"]
    response = live.post("/encode", content=to_bytes(model_store.normal[0]))  # no ?model=: not model_required
    assert response.status_code == 200 and response.headers["x-model"] == "codec-tiny"


def test_client_decode_takes_the_model(live: httpx.Client, model_store) -> None:
    from aecodec import BitstreamMismatch, Client

    with Client(str(live.base_url)) as client:
        encoded = client.encode(model_store.normal[0], model="tiny")
        assert client.decode(encoded, model="tiny", version=1).size == (28, 28)
        assert len(client.decode_batch([encoded, encoded], model="tiny")) == 2
        with pytest.raises(BitstreamMismatch):
            client.decode(encoded, model="tiny-reject")
