"""Encoder effort over HTTP: `?effort=` on /encode and /reconstruct, against a live server.

A refined stream is an ordinary stream of the model (/decode reads it), the answer says the effort it
used, /models shows the range, and every misuse is a 422 naming the problem: out of range, a model
without the setting, with a size target, an image over AEC_EFFORT_MAX_PIXELS.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from service_helpers import assert_error, live_server, synthetic_photo, to_bytes

from aecodec import Client
from contract.bitstream import Bitstream

NAME = "codec-effort"  # tests/conftest.py's effort_store
BODY = to_bytes(synthetic_photo(64, 64, 4, periods=(2, 7), noise=0.05))
BIG = to_bytes(synthetic_photo(128, 128, 5, periods=(2, 7), noise=0.05))


@pytest.fixture(scope="module")
def url(effort_store, model_store, tmp_path_factory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("effort_served")
    for name, source in ((NAME, effort_store / NAME), (model_store.tiny, model_store.path / model_store.tiny)):
        (store / name).symlink_to(source, target_is_directory=True)
    # tiles of 64 px (halo 0): a 64x64 image runs whole, a 128x128 one would be tiled without effort
    with live_server(models_dir=store, default_model=NAME, reload_interval_s=0, log_level="WARNING",
                     effort_max_pixels=128 * 128 - 1, tile_size=64, tile_halo=0) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def test_models_lists_the_effort_range(client: httpx.Client) -> None:
    detail = client.get(f"/models/{NAME}").json()
    version = detail["versions"][0]
    assert version["effort"]["max_effort"] >= 2 and version["effort"]["steps_per_effort"] >= 1


def test_a_refined_stream_decodes_like_any_other(client: httpx.Client) -> None:
    plain = client.post("/encode?quality=2", content=BODY)
    refined = client.post("/encode?quality=2&effort=2", content=BODY)
    assert plain.status_code == refined.status_code == 200, refined.text
    assert refined.headers["x-effort"] == "2" and "x-effort" not in plain.headers
    assert refined.content != plain.content
    header = Bitstream.from_bytes(refined.content)
    assert (header.model, header.quality_hundredths) == (NAME, 200)
    decoded = client.post("/decode", content=refined.content, headers={"Content-Type": "application/octet-stream"})
    assert decoded.status_code == 200 and decoded.headers["content-type"] == "image/png"
    again = client.post("/encode?quality=2&effort=2", content=BODY)
    assert again.content == refined.content  # the same request gives the same stream


def test_reconstruct_with_effort_shows_what_the_stream_decodes_to(client: httpx.Client) -> None:
    refined = client.post("/encode?quality=3&effort=1", content=BODY)
    decoded = client.post("/decode", content=refined.content, headers={"Content-Type": "application/octet-stream"})
    shown = client.post("/reconstruct?quality=3&effort=1", content=BODY)
    assert shown.status_code == 200 and shown.headers["x-effort"] == "1"
    assert shown.content == decoded.content


def test_json_answers_carry_the_effort(client: httpx.Client) -> None:
    body = client.post("/encode?effort=1", content=BODY, headers={"Accept": "application/json"}).json()
    assert body["effort"] == 1
    body = client.post("/encode", content=BODY, headers={"Accept": "application/json"}).json()
    assert body["effort"] == 0


@pytest.mark.parametrize("query, status, code", [
    ("effort=99", 422, "invalid_effort"),
    ("effort=-1", 422, "invalid_request"),
    ("effort=two", 422, "invalid_request"),
    ("effort=99999", 422, "invalid_request"),
    ("effort=1&max_bytes=400", 422, "invalid_request"),
    ("effort=1&target_bpp=0.5", 422, "invalid_request"),
])
def test_bad_efforts_are_named(client: httpx.Client, query: str, status: int, code: str) -> None:
    for route in ("/encode", "/reconstruct"):
        body = assert_error(client.post(f"{route}?{query}", content=BODY), status, code)
        assert "effort" in body["error"]["message"]


def test_a_model_without_the_setting_refuses_it(client: httpx.Client, model_store) -> None:
    body = assert_error(client.post(f"/encode?model={model_store.tiny}&effort=1", content=BODY), 422, "invalid_effort")
    assert "no encoder effort" in body["error"]["message"]
    assert client.post(f"/encode?model={model_store.tiny}&effort=0", content=BODY).status_code == 200


def test_images_over_the_effort_pixel_limit_are_refused(client: httpx.Client) -> None:
    body = assert_error(client.post("/encode?effort=1", content=BIG), 422, "invalid_effort")
    assert "AEC_EFFORT_MAX_PIXELS" in body["error"]["message"] and "128x128" in body["error"]["message"]
    assert client.post("/encode", content=BIG).status_code == 200  # effort 0 has no such limit


def test_a_refined_image_runs_whole_not_in_tiles(client: httpx.Client) -> None:
    """Tiles would each refine their halo their own way: a refined image is one call, and its stream
    decodes to what /reconstruct shows (tile_size 64 here: without effort this image is 4 tiles)."""
    body = to_bytes(synthetic_photo(64, 128, 6, periods=(2, 7), noise=0.05))
    refined = client.post("/encode?quality=2&effort=1", content=body)
    assert refined.status_code == 200, refined.text
    decoded = client.post("/decode", content=refined.content, headers={"Content-Type": "application/octet-stream"})
    shown = client.post("/reconstruct?quality=2&effort=1", content=body)
    assert decoded.status_code == shown.status_code == 200 and decoded.content == shown.content


def test_several_images_with_effort_are_one_named_422(client: httpx.Client) -> None:
    files = [("file", (f"{i}.png", BODY, "image/png")) for i in range(2)]
    body = assert_error(client.post("/encode?effort=1", files=files), 422, "invalid_effort")
    assert "one image per request" in body["error"]["message"]
    assert client.post("/encode?effort=0", files=files).status_code == 200


def test_the_client_and_its_results_pass_effort(url: str) -> None:
    image = synthetic_photo(64, 64, 4, periods=(2, 7), noise=0.05)
    with Client(url) as c:
        encoded = c.encode(np.asarray(image), quality=2, effort=2)
        assert encoded.effort == 2 and encoded.quality == 2
        shown = c.reconstruct(np.asarray(image), quality=2, effort=2)
        assert shown.effort == 2
        assert [e.effort for e in c.encode_batch([np.asarray(image)], quality=2, effort=1)] == [1]
        assert c.encode(np.asarray(image), quality=2).effort == 0


def test_a_server_with_effort_off_shows_no_range_and_names_the_setting(effort_store, tmp_path) -> None:
    (tmp_path / NAME).symlink_to(effort_store / NAME, target_is_directory=True)
    with live_server(models_dir=tmp_path, default_model=NAME, reload_interval_s=0, log_level="WARNING",
                     effort_max_pixels=0) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        listed = c.get("/models").json()["models"][0]["versions"][0]
        detail = c.get(f"/models/{NAME}").json()["versions"][0]
        assert listed["effort"] is None and detail["effort"] is None
        assert detail["card"]["effort"]["max_effort"] >= 2  # the model still has it: this server does not offer it
        body = assert_error(c.post("/encode?effort=1", content=BODY), 422, "invalid_effort")
        assert "AEC_EFFORT_MAX_PIXELS=0" in body["error"]["message"]
