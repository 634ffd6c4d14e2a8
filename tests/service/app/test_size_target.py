"""Compress to a size: `?max_bytes=` / `?target_bpp=` on /encode and /reconstruct, against live servers.

A variable-rate model answers the highest quality (in hundredths, as the stream records it) whose stream
fits: checked by encoding at that quality + 0.01 and seeing it does not fit; even the lowest quality not
fitting is a 422 naming the smallest size; a single-rate model fits or answers that 422; the parameters
are validated; the client and the CLI pass them."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import assert_error, live_server, synthetic_photo, to_bytes

from contract.bitstream import Bitstream
from service.inference.codec import MAX_SEARCH_ENCODES

NAME = "codec-vr"  # tests/conftest.py's variable_rate_store: qualities 1-2


@pytest.fixture(scope="module")
def vr(variable_rate_store) -> Iterator[httpx.Client]:
    with (live_server(models_dir=variable_rate_store, default_model=NAME, reload_interval_s=0,
                      log_level="WARNING") as srv,
          httpx.Client(base_url=srv.url, timeout=120) as c):
        yield c


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return synthetic_photo(height, width, seed, periods=(2, 7), noise=0.05)


BODY = to_bytes(_photo(96, 80, seed=3))


def _size_at(client: httpx.Client, quality: float, body: bytes = BODY) -> int:
    response = client.post(f"/encode?version=1&quality={quality:.2f}", content=body)
    assert response.status_code == 200, response.text
    return len(response.content)


@pytest.fixture(scope="module")
def extremes(vr: httpx.Client) -> tuple[int, int]:
    low, high = _size_at(vr, 1), _size_at(vr, 2)
    assert low < high
    return low, high


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.71, 0.999])
def test_the_stream_fits_and_one_step_more_would_not(vr: httpx.Client, extremes, fraction: float) -> None:
    low, high = extremes
    limit = round(low + fraction * (high - 1 - low))
    response = vr.post(f"/encode?version=1&max_bytes={limit}", content=BODY)
    assert response.status_code == 200, response.text
    quality = float(response.headers["x-quality"])
    assert len(response.content) <= limit and int(response.headers["x-bytes"]) == len(response.content)
    assert Bitstream.from_bytes(response.content).quality == quality  # the stream records what was chosen
    assert 1 <= quality < 2
    assert _size_at(vr, quality + 0.01) > limit  # one step of quality more does not fit
    # the same stream as asking for that quality: the search encodes exactly as /encode?quality= does
    assert response.content == vr.post(f"/encode?version=1&quality={quality:.2f}", content=BODY).content
    encodes = int(response.headers["x-search-encodes"])
    assert 2 <= encodes <= min(MAX_SEARCH_ENCODES, 2 + math.ceil(math.log2(100)))
    assert vr.post("/decode", content=response.content).status_code == 200


def test_a_target_the_top_quality_meets_costs_one_encode(vr: httpx.Client, extremes) -> None:
    response = vr.post(f"/encode?version=1&max_bytes={extremes[1]}", content=BODY)
    assert response.status_code == 200, response.text
    assert response.headers["x-quality"] == "2.00" and response.headers["x-search-encodes"] == "1"


def test_below_the_lowest_quality_is_a_422_naming_the_smallest_size(vr: httpx.Client, extremes) -> None:
    low, _ = extremes
    for route in ("/encode", "/reconstruct"):
        body = assert_error(vr.post(f"{route}?version=1&max_bytes={low - 1}", content=BODY), 422, "target_too_small")
        message = body["error"]["message"]
        assert f"smallest size possible with model {NAME} version 1 is {low} bytes" in message, message
        assert f"max_bytes={low - 1}" in message
    bpp = (low - 1) * 8 / (96 * 80)
    message = assert_error(vr.post(f"/encode?version=1&target_bpp={bpp:.6f}", content=BODY), 422,
                           "target_too_small")["error"]["message"]
    assert f"{low} bytes" in message and "target_bpp=" in message


def test_target_bpp_is_max_bytes_per_image(vr: httpx.Client, extremes) -> None:
    low, high = extremes
    bpp = (low + high) / 2 * 8 / (96 * 80)
    by_bpp = vr.post(f"/encode?version=1&target_bpp={bpp}", content=BODY)
    by_bytes = vr.post(f"/encode?version=1&max_bytes={math.floor(bpp * 96 * 80 / 8)}", content=BODY)
    assert by_bpp.status_code == 200 and by_bpp.content == by_bytes.content
    # several files: each image has its own budget (bpp of its own size)
    small = to_bytes(_photo(48, 40, seed=4))
    files = [("file", ("a.png", BODY, "image/png")), ("file", ("b.png", small, "image/png"))]
    results = vr.post(f"/encode?version=1&target_bpp={bpp}", files=files).json()
    for item, (h, w) in zip(results, [(96, 80), (48, 40)]):
        assert item["bytes"] <= math.floor(bpp * h * w / 8) and item["bpp"] <= bpp
        assert item["quality"] is not None and 1 <= item["search_encodes"] <= MAX_SEARCH_ENCODES


def test_reconstruct_decodes_the_stream_it_found(vr: httpx.Client, extremes) -> None:
    low, high = extremes
    limit = (low + high) // 2
    encoded = vr.post(f"/encode?version=1&max_bytes={limit}", content=BODY)
    reconstructed = vr.post(f"/reconstruct?version=1&max_bytes={limit}", content=BODY)
    assert reconstructed.status_code == 200, reconstructed.text
    h = reconstructed.headers
    assert h["x-quality"] == encoded.headers["x-quality"] and int(h["x-bytes"]) == len(encoded.content) <= limit
    assert float(h["x-bpp"]) == pytest.approx(len(encoded.content) * 8 / (96 * 80), abs=1e-6)
    decoded = vr.post("/decode", content=encoded.content)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(reconstructed.content))),
                          np.asarray(Image.open(io.BytesIO(decoded.content))))
    as_json = vr.post(f"/reconstruct?version=1&max_bytes={limit}", content=BODY,
                      headers={"Accept": "application/json"}).json()
    assert as_json["bytes"] == len(encoded.content) and as_json["quality"] == float(h["x-quality"])
    assert as_json["search_encodes"] == int(h["x-search-encodes"])
    plain = vr.post("/reconstruct?version=1", content=BODY, headers={"Accept": "application/json"}).json()
    assert plain["bytes"] is None and plain["search_encodes"] is None  # no target: no stream is written


@pytest.mark.parametrize("query", [
    "max_bytes=100&target_bpp=0.5",  # both
    "max_bytes=-5", "max_bytes=0", "max_bytes=1.5", "max_bytes=", "target_bpp=-0.1", "target_bpp=0",
    "target_bpp=nan", "quality=1.5&max_bytes=1000",  # a quality and a size target
])
def test_size_parameters_are_validated(vr: httpx.Client, query: str) -> None:
    for route in ("/encode", "/reconstruct"):
        message = assert_error(vr.post(f"{route}?{query}", content=BODY), 422, "invalid_request")["error"]["message"]
        assert "max_bytes" in message or "target_bpp" in message, message


def test_a_single_rate_model_fits_or_says_its_size(server) -> None:
    body = to_bytes(_photo(64, 48, seed=5))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        plain = client.post("/encode?model=codec-tiny", content=body)
        size = len(plain.content)
        fits = client.post(f"/encode?model=codec-tiny&max_bytes={size}", content=body)
        assert fits.status_code == 200 and fits.content == plain.content
        assert "x-quality" not in fits.headers and fits.headers["x-search-encodes"] == "1"
        message = assert_error(client.post(f"/encode?model=codec-tiny&max_bytes={size - 1}", content=body), 422,
                               "target_too_small")["error"]["message"]
        assert "single rate" in message and f"{size} bytes" in message


def test_client_and_cli_pass_the_size_target(vr: httpx.Client, extremes, tmp_path) -> None:
    from aecodec import AsyncClient, Client, InvalidInput, TargetTooSmall
    from aecodec.cli import main as cli_main

    low, high = extremes
    limit = (low + high) // 2
    image = np.asarray(Image.open(io.BytesIO(BODY)))
    url = str(vr.base_url)
    with Client(url, version=1) as client:
        encoded = client.encode(image, max_bytes=limit)
        assert len(encoded) <= limit and encoded.quality is not None and encoded.search_encodes
        assert client.reconstruct(image, max_bytes=limit).stream_bytes == len(encoded)
        bpp = limit * 8 / (96 * 80)
        assert [len(e) <= limit for e in client.encode_batch([image, image], target_bpp=bpp)] == [True, True]
        assert all(r.quality == encoded.quality for r in client.reconstruct_batch([image], max_bytes=limit))
        with pytest.raises(TargetTooSmall, match=f"{low} bytes"):
            client.encode(image, max_bytes=low - 1)
        with pytest.raises(InvalidInput, match="not both"):
            client.encode(image, max_bytes=limit, target_bpp=1.0)

    async def run() -> tuple[float | None, int | None]:
        async with AsyncClient(url, version=1) as aclient:
            a = await aclient.encode(image, max_bytes=limit)
            b = await aclient.reconstruct(image, target_bpp=limit * 8 / (96 * 80))
            return a.quality, b.stream_bytes

    assert asyncio.run(run()) == (encoded.quality, len(encoded))
    path = tmp_path / "x.png"
    path.write_bytes(BODY)
    assert cli_main(["--url", url, "--version", "1", "encode", str(path), "--max-bytes", str(limit),
                     "-o", str(tmp_path / "x.aec")]) == 0
    assert (tmp_path / "x.aec").read_bytes() == bytes(encoded)
    assert cli_main(["--url", url, "--version", "1", "--json", "reconstruct", str(path), "--target-bpp",
                     str(limit * 8 / (96 * 80)), "-o", str(tmp_path / "r.png")]) == 0
    assert cli_main(["--url", url, "--version", "1", "encode", str(path), "--max-bytes", str(low - 1)]) == 1
