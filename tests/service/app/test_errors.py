"""Every class of bad input gets a 4xx with the one error shape, over a real server (never a 5xx)."""

from __future__ import annotations

import zlib
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import MAX_PIXELS, MAX_UPLOAD, assert_error, noise_image, png_header_claiming, to_bytes

from contract.bitstream import Bitstream
from service.app.query import query_pairs


@pytest.fixture(scope="module")
def digit(model_store) -> bytes:
    return to_bytes(model_store.normal[0])


@pytest.fixture(scope="module")
def stream(client: httpx.Client, digit: bytes) -> bytes:
    return client.post("/encode", content=digit).content


def _recrc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


# ---- images ------------------------------------------------------------------------------------------
def test_not_an_image_is_415(client: httpx.Client) -> None:
    assert_error(client.post("/encode", content=b"hello, I am text", headers={"Content-Type": "image/png"}),
                 415, "unsupported_image")
    gif = to_bytes(noise_image(28, 28), "GIF")
    body = assert_error(client.post("/reconstruct", content=gif), 415, "unsupported_image")
    assert "GIF" in body["error"]["message"]


def test_truncated_png_is_400(client: httpx.Client) -> None:
    png = to_bytes(noise_image(28, 28, seed=1))
    assert_error(client.post("/encode", content=png[: len(png) * 2 // 3]), 400, "corrupt_image")


def test_empty_bodies_are_400(client: httpx.Client) -> None:
    for path in ("/encode", "/decode", "/reconstruct", "/anomaly-score"):
        assert_error(client.post(path, content=b""), 400, "empty_body")
    empty_file = client.post("/encode", files={"file": ("empty.png", b"", "image/png")})
    assert_error(empty_file, 400, "empty_body")
    form_only = b'--b0\r\nContent-Disposition: form-data; name="note"\r\n\r\nno file here\r\n--b0--\r\n'
    no_files = client.post("/encode", content=form_only, headers={"Content-Type": "multipart/form-data; boundary=b0"})
    assert_error(no_files, 400, "empty_body")


def test_body_over_limit_is_413_from_content_length(client: httpx.Client) -> None:
    assert_error(client.post("/encode", content=b"\0" * (MAX_UPLOAD + 1)), 413, "payload_too_large")


def test_body_over_limit_is_413_while_streaming(client: httpx.Client) -> None:
    sent = 0

    def chunks():  # no Content-Length: the server must count while reading and stop early
        nonlocal sent
        for _ in range(64):
            sent += 16 * 1024
            yield b"\0" * (16 * 1024)

    assert_error(client.post("/encode", content=chunks()), 413, "payload_too_large")
    multipart = [("file", (f"{i}.png", b"\0" * (MAX_UPLOAD // 2), "image/png")) for i in range(3)]
    assert_error(client.post("/encode", files=multipart), 413, "payload_too_large")


def test_too_many_pixels_from_header_is_413(client: httpx.Client) -> None:
    side = int(MAX_PIXELS**0.5) + 10  # just over our limit, far under Pillow's own
    body = assert_error(client.post("/encode", content=png_header_claiming(side, side)), 413, "too_many_pixels")
    assert str(MAX_PIXELS) in body["error"]["message"]
    # Far over Pillow's decompression-bomb limit: Pillow itself refuses in Image.open, still a 413.
    assert_error(client.post("/reconstruct", content=png_header_claiming(100_000, 100_000)), 413, "too_many_pixels")


def test_too_many_files_is_413(client: httpx.Client, digit: bytes) -> None:
    files = [("file", (f"{i}.png", digit, "image/png")) for i in range(9)]  # the server allows 8
    assert_error(client.post("/encode", files=files), 413, "too_many_files")


def test_batch_error_names_the_file(client: httpx.Client, digit: bytes) -> None:
    files = [("file", ("good.png", digit, "image/png")), ("file", ("bad.png", b"junk", "image/png"))]
    body = assert_error(client.post("/encode", files=files), 415, "unsupported_image")
    assert "bad.png" in body["error"]["message"]


def test_fixed_size_reject_policy_is_422(client: httpx.Client) -> None:
    response = client.post("/encode?model=tiny-reject", content=to_bytes(noise_image(30, 40)))
    body = assert_error(response, 422, "image_size_rejected")
    assert "28x28" in body["error"]["message"]
    ok = client.post("/encode?model=tiny-reject", content=to_bytes(noise_image(28, 28)))
    assert ok.status_code == 200 and ok.headers["x-size-policy"] == "reject"


# ---- models ------------------------------------------------------------------------------------------
def test_unknown_model_and_version_are_404(client: httpx.Client, digit: bytes) -> None:
    assert_error(client.post("/encode?model=nope", content=digit), 404, "model_not_found")
    body = assert_error(client.post("/encode?model=tiny&version=7", content=digit), 404, "version_not_found")
    assert "[1]" in body["error"]["message"]
    assert_error(client.post("/anomaly-score?version=7", content=digit), 404, "version_not_found")


# ---- bitstreams --------------------------------------------------------------------------------------
def test_bitstream_for_another_model_is_422(client: httpx.Client, stream: bytes) -> None:
    body = assert_error(client.post("/decode?model=tiny-reject", content=stream), 422, "bitstream_model_mismatch")
    assert "tiny" in body["error"]["message"]
    assert_error(client.post("/decode?version=2", content=stream), 422, "bitstream_model_mismatch")


def test_bitstream_with_other_tables_is_422(client: httpx.Client, stream: bytes) -> None:
    parsed = Bitstream.from_bytes(stream)
    forged = Bitstream(parsed.model, parsed.version, b"\x00\x01\x02\x03", parsed.height, parsed.width,
                       parsed.channels, parsed.latents).to_bytes()
    body = assert_error(client.post("/decode", content=forged), 422, "bitstream_model_mismatch")
    assert "tables hash" in body["error"]["message"]


def test_bitstream_naming_an_unloaded_model_is_404(client: httpx.Client, stream: bytes) -> None:
    parsed = Bitstream.from_bytes(stream)
    other = Bitstream("ghost", 1, parsed.tables_hash, 28, 28, 1, parsed.latents).to_bytes()
    assert_error(client.post("/decode", content=other), 404, "model_not_found")
    old = Bitstream(parsed.model, 5, parsed.tables_hash, 28, 28, 1, parsed.latents).to_bytes()
    assert_error(client.post("/decode", content=old), 404, "version_not_found")


def test_corrupt_bitstream_is_400(client: httpx.Client, stream: bytes) -> None:
    flipped = bytearray(stream)
    flipped[len(flipped) // 2] ^= 0x10
    body = assert_error(client.post("/decode", content=bytes(flipped)), 400, "corrupt_bitstream")
    assert "checksum" in body["error"]["message"]
    assert_error(client.post("/decode", content=stream[:-7]), 400, "corrupt_bitstream")
    assert_error(client.post("/decode", content=b"definitely not a stream"), 400, "corrupt_bitstream")


def test_crafted_stream_with_huge_size_or_wrong_latents_is_refused(client: httpx.Client, stream: bytes) -> None:
    parsed = Bitstream.from_bytes(stream)
    huge = Bitstream(parsed.model, 1, parsed.tables_hash, 50_000, 50_000, 1, parsed.latents).to_bytes()
    assert_error(client.post("/decode", content=huge), 413, "too_many_pixels")
    shape, payload = parsed.latents[0]
    wrong = Bitstream(parsed.model, 1, parsed.tables_hash, 28, 28, 1, [((shape[0] * 1000,), payload)]).to_bytes()
    assert_error(client.post("/decode", content=wrong), 400, "corrupt_bitstream")
    bad_channels = Bitstream(parsed.model, 1, parsed.tables_hash, 28, 28, 4, parsed.latents).to_bytes()
    assert_error(client.post("/decode", content=bad_channels), 400, "corrupt_bitstream")
    garbage = Bitstream(parsed.model, 1, parsed.tables_hash, 28, 28, 1, [(shape, b"\xff" * 3)]).to_bytes()
    response = client.post("/decode", content=garbage)  # range decoders accept most bytes: a 4xx or an image
    assert response.status_code in (200, 400), response.text


# ---- framework errors in the same shape -----------------------------------------------------------
def test_framework_errors_use_the_same_shape(client: httpx.Client, digit: bytes) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/encode"), 405, "method_not_allowed")
    assert_error(client.post("/encode?version=abc", content=digit), 422, "invalid_request")
    assert_error(client.post("/reconstruct?format=gif", content=digit), 422, "invalid_request")
    # the hot routes parse their query by hand (service/app/query.py): same codes, messages name the parameter
    for query, name in (("version=0", "version"), ("version=1.5", "version"), ("version=", "version"),
                        ("heatmap=maybe", "heatmap"), ("heatmap=", "heatmap"), ("error_map=2", "error_map"),
                        ("format=", "format")):
        body = assert_error(client.post(f"/anomaly-score?{query}", content=digit), 422, "invalid_request")
        assert body["error"]["message"].startswith(f"{name}:"), body
    assert client.post("/anomaly-score?heatmap=1&unknown=x", content=digit).json()["heatmap"] is not None
    # curl --data-binary without -H says application/x-www-form-urlencoded: the bytes decide.
    assert_error(client.post("/encode", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}),
                 415, "unsupported_image")
    broken = client.post("/encode", content=b"--xx\r\nnonsense", headers={"Content-Type": "multipart/form-data"})
    assert_error(broken, 400, "invalid_multipart")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(min_size=0, max_size=300), path=st.sampled_from(["/encode", "/decode", "/reconstruct",
                                                                      "/anomaly-score"]),
       prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"AEC\x01", b"\xff\xd8\xff", b"RIFF", b"BM"]))
def test_random_bytes_never_5xx(client: httpx.Client, data: bytes, path: str, prefix: bytes) -> None:
    response = client.post(path, content=prefix + data)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert set(response.json()) == {"error"}


@given(st.text(alphabet="ab=&%+2Fx;é ", max_size=24))
def test_hot_query_string_reads_as_starlette_would(text: str) -> None:
    """The hot routes' hand-rolled query split gives what Starlette's QueryParams (parse_qsl, last value
    wins) gives for any string: escapes, '+', blank values, repeated and empty names."""
    assert query_pairs(text) == dict(parse_qsl(text, keep_blank_values=True))
