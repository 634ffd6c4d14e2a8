"""A variable-rate codec served as one model with a quality input: odd sizes, grey and RGBA round
trips, rates that grow with the quality (fractions included), the quality carried by the stream, and
streams refused by another version of the model."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import assert_error, live_server, synthetic_photo, to_bytes

from contract.bitstream import Bitstream

LEVELS = (0.003, 0.05)  # tests/conftest.py's variable_rate_store
NAME = "codec-vr"


@pytest.fixture(scope="module")
def store(variable_rate_store) -> object:
    return variable_rate_store


@pytest.fixture(scope="module")
def client(store) -> Iterator[httpx.Client]:
    with (live_server(models_dir=store, default_model=NAME, reload_interval_s=0, log_level="WARNING") as srv,
          httpx.Client(base_url=srv.url, timeout=60) as c):
        yield c


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return synthetic_photo(height, width, seed, periods=(3, 9))


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (1000, 7), (7, 1000)])
def test_odd_sizes_round_trip(client: httpx.Client, size: tuple[int, int]) -> None:
    body = to_bytes(_photo(*size))
    encoded = client.post("/encode", content=body)
    assert encoded.status_code == 200, encoded.text
    stream = Bitstream.from_bytes(encoded.content)
    assert (stream.height, stream.width, stream.channels) == (*size, 3)
    assert float(encoded.headers["x-bpp"]) == pytest.approx(len(encoded.content) * 8 / (size[0] * size[1]))
    decoded = client.post("/decode", content=encoded.content)
    assert decoded.status_code == 200, decoded.text
    image = Image.open(io.BytesIO(decoded.content))
    assert image.size == (size[1], size[0]) and image.mode == "RGB"
    # the decode of the stream is exactly what /reconstruct shows for that image
    assert decoded.content == client.post("/reconstruct", content=body).content


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grey_and_rgba_inputs(client: httpx.Client, mode: str) -> None:
    pixels = _photo(40, 50, seed=3)
    if mode == "RGBA":
        alpha = np.linspace(0, 1, 50, dtype=np.float32)[None, :, None].repeat(40, 0)
        upload = to_bytes(np.concatenate([pixels, alpha], axis=-1), mode="RGBA")
        seen = pixels * alpha + (1 - alpha)  # what the service codes: composited on white
    else:
        upload = to_bytes(pixels, mode="L")
        grey = np.asarray(Image.open(io.BytesIO(upload)), dtype=np.float32) / 255
        seen = np.repeat(grey[..., None], 3, axis=-1)
    encoded = client.post("/encode", content=upload)
    assert encoded.status_code == 200, encoded.text
    assert Bitstream.from_bytes(encoded.content).channels == (1 if mode == "L" else 3)
    decoded = client.post("/decode", content=encoded.content).content
    assert np.asarray(Image.open(io.BytesIO(decoded))).shape == ((40, 50) if mode == "L" else (40, 50, 3))
    assert decoded == client.post("/reconstruct", content=upload).content  # grey comes back grey, RGBA as RGB
    if mode == "RGBA":  # X-PSNR is measured against the composited input the model saw
        psnr = float(client.post("/reconstruct", content=upload).headers["x-psnr"])
        got = np.asarray(Image.open(io.BytesIO(decoded)), dtype=np.float64) / 255
        assert psnr == pytest.approx(10 * np.log10(1 / np.mean((got - seen) ** 2)), abs=0.1)


def test_bits_grow_with_quality_and_the_stream_records_it(client: httpx.Client) -> None:
    body = to_bytes(_photo(128, 192, seed=5))
    sizes = []
    for quality in (1, 1.5, 2):
        encoded = client.post(f"/encode?model={NAME}&version=1&quality={quality}", content=body)
        assert encoded.status_code == 200, encoded.text
        assert float(encoded.headers["x-quality"]) == quality
        assert Bitstream.from_bytes(encoded.content).quality == quality
        decoded = client.post("/decode", content=encoded.content)
        assert decoded.status_code == 200 and float(decoded.headers["x-quality"]) == quality
        # decode reads the quality from the stream: it is what /reconstruct gives at that quality
        assert decoded.content == client.post(f"/reconstruct?version=1&quality={quality}", content=body).content
        sizes.append(len(encoded.content))
    assert sizes[0] < sizes[1] < sizes[2]  # a quality between two levels lands between them
    default = client.post(f"/encode?model={NAME}&version=1", content=body)
    assert float(default.headers["x-quality"]) == 1.0  # the card's default_quality (the lower level of two)
    assert default.content == client.post(f"/encode?model={NAME}&version=1&quality=1", content=body).content


def test_quality_is_snapped_to_hundredths(client: httpx.Client) -> None:
    body = to_bytes(_photo(64, 64, seed=7))
    a = client.post("/encode?version=1&quality=1.234", content=body)
    b = client.post("/encode?version=1&quality=1.23", content=body)
    assert a.status_code == 200 and a.headers["x-quality"] == "1.23" and a.content == b.content
    json_result = client.post("/encode?version=1&quality=1.5", content=body, headers={"Accept": "application/json"})
    assert json_result.json()["quality"] == 1.5


@pytest.mark.parametrize("quality", ["0.99", "2.01", "-1", "nan", "inf"])
def test_quality_outside_the_range_is_refused(client: httpx.Client, quality: str) -> None:
    body = to_bytes(_photo(32, 32))
    for route in ("/encode", "/reconstruct"):
        response = client.post(f"{route}?quality={quality}", content=body)
        code = "invalid_quality" if quality in ("0.99", "2.01", "-1") else "invalid_request"
        message = assert_error(response, 422, code)["error"]["message"]
        assert "quality" in message


def test_models_list_the_quality_range(client: httpx.Client) -> None:
    versions = client.get(f"/models/{NAME}").json()["versions"]
    assert {v["version"]: v["rate"]["lmbdas"] for v in versions} == {1: list(LEVELS), 2: list(LEVELS)}
    assert all(v["rate"]["default_quality"] == 1.0 for v in versions)


def test_a_stream_is_refused_by_another_version_or_quality(client: httpx.Client) -> None:
    body = to_bytes(_photo(64, 64, seed=6))
    stream = client.post(f"/encode?model={NAME}&version=1&quality=2", content=body).content
    assert client.post(f"/decode?model={NAME}&version=1", content=stream).status_code == 200
    assert client.post(f"/decode?model={NAME}&version=1&quality=2", content=stream).status_code == 200
    message = assert_error(client.post("/decode?quality=1.5", content=stream), 422, "bitstream_model_mismatch")
    assert "coded at quality 2, not quality 1.5" in message["error"]["message"]
    assert_error(client.post(f"/decode?model={NAME}&version=2", content=stream), 422, "bitstream_model_mismatch")
    parsed = Bitstream.from_bytes(stream)  # a header relabelled to version 2: its tables hash still differs
    forged = Bitstream(NAME, 2, parsed.tables_hash, parsed.height, parsed.width, parsed.channels,
                       parsed.latents, parsed.quality_hundredths).to_bytes()
    body_json = assert_error(client.post("/decode", content=forged), 422, "bitstream_model_mismatch")
    assert "tables hash" in body_json["error"]["message"]


@pytest.mark.parametrize("quality", [None, 0, 250])
def test_a_stream_without_a_valid_quality_is_refused(client: httpx.Client, quality: int | None) -> None:
    stream = Bitstream.from_bytes(client.post("/encode?version=1", content=to_bytes(_photo(64, 64))).content)
    forged = Bitstream(stream.model, stream.version, stream.tables_hash, stream.height, stream.width,
                       stream.channels, stream.latents, quality).to_bytes()
    assert "quality" in assert_error(client.post("/decode", content=forged), 400, "corrupt_bitstream")["error"]["message"]


def test_clients_pass_the_quality(client: httpx.Client, tmp_path) -> None:
    import asyncio

    from aecodec import AsyncClient, Client
    from aecodec.cli import main as cli_main

    image = _photo(48, 40, seed=8)
    url = str(client.base_url)
    with Client(url) as sync:
        encoded = sync.encode(image, quality=1.5, version=1)
        assert encoded.quality == 1.5 and Bitstream.from_bytes(bytes(encoded)).quality == 1.5
        assert sync.reconstruct(image, quality=2, version=1).quality == 2.0
        assert [e.quality for e in sync.encode_batch([image, image], quality=1.25, version=1)] == [1.25, 1.25]

    async def run() -> float | None:
        async with AsyncClient(url) as client_:
            return (await client_.reconstruct(image, quality=1.75, version=1)).quality

    assert asyncio.run(run()) == 1.75
    path = tmp_path / "x.png"
    path.write_bytes(to_bytes(image))
    assert cli_main(["--url", url, "--version", "1", "encode", str(path), "-q", "1.5", "-o", str(tmp_path / "x.aec")]) == 0
    assert Bitstream.from_bytes((tmp_path / "x.aec").read_bytes()).quality == 1.5
