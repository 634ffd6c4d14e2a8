"""Hostile input over the live server: forged bitstreams (valid CRC, lying headers, random payloads)
and model names with path tricks end in clean 4xx errors in the one JSON shape."""

from __future__ import annotations

import zlib

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import assert_error, to_bytes

from service.contract.bitstream import Bitstream

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def digit(model_store) -> bytes:
    return to_bytes(model_store.normal[0])


@pytest.fixture(scope="module")
def real(client: httpx.Client, digit: bytes) -> Bitstream:
    return Bitstream.from_bytes(client.post("/encode", content=digit).content)


def _assert_clean_4xx_or_image(response: httpx.Response) -> None:
    if response.status_code == 200:  # range decoders accept most payloads: then it is an image
        assert response.headers["content-type"] == "image/png" and response.content[:4] == b"\x89PNG"
        return
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


@FUZZ
@given(data=st.data())
def test_forged_streams_for_a_loaded_model(client: httpx.Client, real: Bitstream, data: st.DataObject) -> None:
    """Right name and tables hash (so the checks past the header run), everything else drawn."""
    shape, _ = real.latents[0]
    dim = st.integers(0, (1 << 31) - 1)
    latents = data.draw(st.one_of(
        st.just(real.latents),
        st.just([(shape, data.draw(st.binary(max_size=200)))]),
        st.lists(st.tuples(st.lists(st.one_of(st.integers(0, 64), dim), max_size=5).map(tuple),
                           st.binary(max_size=64)), max_size=3),
    ))
    forged = Bitstream(
        real.model, real.version, real.tables_hash,
        data.draw(st.one_of(st.just(real.height), st.integers(0, 4096), dim)),
        data.draw(st.one_of(st.just(real.width), st.integers(0, 4096), dim)),
        data.draw(st.sampled_from([1, 3, 0, 2, 4, 255])), latents,
    )
    _assert_clean_4xx_or_image(client.post("/decode", content=forged.to_bytes()))


@FUZZ
@given(st.binary(max_size=120))
def test_random_bodies_behind_a_valid_magic_and_crc(client: httpx.Client, body: bytes) -> None:
    stream = b"AEC\x01" + body
    _assert_clean_4xx_or_image(client.post("/decode", content=stream + zlib.crc32(stream).to_bytes(4, "big")))


# ---- model names: looked up in the registry, never joined to a path ------------------------------
TRICKS = ["../tiny", "..", ".", "../../etc/passwd", "/etc/passwd", "tiny/../tiny", "tiny/1", "%2e%2e",
          "..%2Ftiny", "tiny%00", "tiny\x00", "C:\\tiny", "~", "tiny ", "TINY", "*", "tiny;1"]


@pytest.mark.parametrize("name", TRICKS)
def test_model_query_with_path_tricks_is_404(client: httpx.Client, digit: bytes, name: str) -> None:
    for path in ("/encode", "/reconstruct", "/anomaly-score"):
        body = assert_error(client.post(path, params={"model": name}, content=digit), 404, "model_not_found")
        assert "loaded models" in body["error"]["message"]


@pytest.mark.parametrize("raw_path", ["/models/..%2F..%2Fetc%2Fpasswd", "/models/%2e%2e", "/models/%2Fetc%2Fpasswd",
                                      "/models/..%2Ftiny", "/models/tiny%2F..%2Ftiny-reject",
                                      "/models/%2e%2e/versions/1", "/models/..%5C..%5Ctiny/versions/1"])
def test_model_path_with_path_tricks_is_404(server, raw_path: str) -> None:
    # Sent byte for byte (httpx would normalise "/models/../x"): the router sees the encoded segment.
    with httpx.Client(base_url=server.url) as raw:
        request = raw.build_request("GET", "/")
        request.url = request.url.copy_with(raw_path=raw_path.encode())
        response = raw.send(request)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] in ("model_not_found", "not_found")
    assert "root:" not in response.text


def test_bitstream_naming_a_path_is_404(client: httpx.Client, real: Bitstream) -> None:
    for name in ("../tiny", "/tmp/tiny", "tiny/../tiny"):
        forged = Bitstream(name, real.version, real.tables_hash, real.height, real.width, real.channels, real.latents)
        assert_error(client.post("/decode", content=forged.to_bytes()), 404, "model_not_found")
