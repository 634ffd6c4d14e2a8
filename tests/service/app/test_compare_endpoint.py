"""POST /compare on a live server: the shipped `natural` codec against JPEG, WebP and AVIF at its bytes.

Every classic file must fit in our stream's bytes while one quality step more would not (or be at the top
of its scale); the stream counted must be the one /encode makes; PSNR must be what the files decode to;
bad input is a clear 4xx under the same key and limits as the other POST routes.
"""

from __future__ import annotations

import base64
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import ROOT, assert_error, live_server, noise_image, to_bytes

from service.inference import compare

PHOTO = (ROOT / "tests" / "expected" / "golden" / "inputs" / "photo.png").read_bytes()  # 128×96 RGB
PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def photo_client(photo_server) -> httpx.Client:
    with httpx.Client(base_url=photo_server.url, timeout=120) as c:
        yield c


def _pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean(((a.astype(np.float64) - b) / 255.0) ** 2)
    return 10 * math.log10(1 / mse)


@pytest.mark.parametrize("quality", ["1", "4.5"])
def test_each_codec_fits_our_bytes_and_one_quality_step_more_would_not(photo_client: httpx.Client, quality: str) -> None:
    answer = photo_client.post(f"/compare?quality={quality}", content=PHOTO, headers=PNG)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert [c["codec"] for c in result["codecs"]] == ["aec", "jpeg", "webp", "avif"]
    assert (result["model"], result["quality"], result["width"], result["height"]) == ("natural", float(quality), 128, 96)

    # our figures are the stream /encode makes, and what /decode makes of it
    stream = photo_client.post(f"/encode?quality={quality}", content=PHOTO, headers=PNG).content
    ours = result["codecs"][0]
    assert ours["bytes"] == result["target_bytes"] == len(stream)
    assert ours["bpp"] == pytest.approx(len(stream) * 8 / (128 * 96))
    decoded = _pixels(photo_client.post("/decode", content=stream).content)
    original = _pixels(PHOTO)
    assert ours["psnr"] == pytest.approx(_psnr(original, decoded), abs=1e-6)

    image = Image.open(io.BytesIO(PHOTO)).convert("RGB")
    for entry in result["codecs"][1:]:
        if not compare.available(entry["codec"]):
            assert entry["available"] is False and entry["reason"]
            continue
        spec = compare.SPECS[entry["codec"]]
        data = base64.b64decode(entry["image"])
        assert Image.open(io.BytesIO(data)).format == spec.pil_format
        assert len(data) == entry["bytes"] and entry["media_type"] == spec.media_type
        assert data == compare.encode(image, spec, entry["quality"])  # the file is that quality's, as Pillow writes it
        assert entry["psnr"] == pytest.approx(_psnr(original, _pixels(data)), abs=1e-6)
        if entry["fits"]:
            assert entry["bytes"] <= len(stream)
            if entry["at_max_quality"]:
                assert entry["quality"] == spec.max_quality and entry["next_quality_bytes"] is None
            else:
                one_more = len(compare.encode(image, spec, entry["quality"] + 1))
                assert entry["next_quality_bytes"] == one_more > len(stream)
        else:  # even its lowest quality is over our bytes: its smallest file, said so
            assert entry["quality"] == spec.min_quality and entry["bytes"] > len(stream)
        assert entry["encodes"] <= 8


def _smooth_photo(height: int = 96, width: int = 128) -> bytes:
    """Soft colour gradients with a little texture (the golden photo is noise: every quality misses it)."""
    y, x = np.mgrid[0:height, 0:width] / 30.0
    rgb = np.stack([0.5 + 0.3 * np.sin(x + 2 * y), 0.5 + 0.2 * np.cos(3 * x - y), 0.4 + 0.1 * x / 4], -1)
    rgb += np.random.default_rng(0).normal(0, 0.01, rgb.shape)
    return to_bytes(np.clip(rgb, 0, 1))


def test_the_heat_map_follows_the_quality(photo_client: httpx.Client) -> None:
    plain = photo_client.post("/compare?quality=2", content=PHOTO, headers=PNG).json()
    assert plain["heatmap"] is None  # only on request
    photo = _smooth_photo()
    maps = {q: photo_client.post(f"/compare?quality={q}&heatmap=true", content=photo, headers=PNG).json()
            for q in (1, 8)}
    pixels = {q: _pixels(base64.b64decode(m["heatmap"])) for q, m in maps.items()}
    assert pixels[1].shape == pixels[8].shape == (96, 128, 3)
    # one scale at both qualities: the lower quality's larger error moves the map further from the plain
    # dimmed grey copy of the photo that no error at all would give
    grey = 0.55 * (_pixels(photo).astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
    heat = {q: float(np.abs(p - grey).mean()) for q, p in pixels.items()}
    assert maps[1]["codecs"][0]["psnr"] < maps[8]["codecs"][0]["psnr"]
    assert heat[1] > 1.5 * heat[8], (heat, [m["codecs"][0]["psnr"] for m in maps.values()])


def test_ms_ssim_for_every_file_when_the_image_is_big_enough(photo_client: httpx.Client) -> None:
    from service.inference import msssim

    small = photo_client.post("/compare?quality=2", content=PHOTO, headers=PNG).json()  # 128×96: under 161 px
    assert all(c["ms_ssim"] is None for c in small["codecs"])
    photo = _smooth_photo(176, 192)
    result = photo_client.post("/compare?quality=2", content=photo, headers=PNG).json()
    original = _pixels(photo)
    stream = photo_client.post("/encode?quality=2", content=photo, headers=PNG).content
    files = {"aec": photo_client.post("/decode", content=stream).content}
    files |= {c["codec"]: base64.b64decode(c["image"]) for c in result["codecs"][1:] if c["available"]}
    for entry in result["codecs"]:
        if entry["codec"] in files:
            assert entry["ms_ssim"] == pytest.approx(msssim.ms_ssim(original, _pixels(files[entry["codec"]])), abs=1e-6)
    # ours on 8-bit pixels is within rounding of /reconstruct's, measured on the model's float output
    reconstructed = photo_client.post("/reconstruct?quality=2", content=photo, headers=PNG)
    assert result["codecs"][0]["ms_ssim"] == pytest.approx(float(reconstructed.headers["x-ms-ssim"]), abs=2e-3)


def test_a_grey_image_on_a_single_rate_model(photo_client: httpx.Client, model_store) -> None:
    digit = to_bytes(model_store.normal[0])
    result = photo_client.post("/compare?model=tiny", content=digit, headers=PNG).json()
    assert (result["model"], result["quality"], result["channels"]) == ("tiny", None, 1)
    stream = photo_client.post("/encode?model=tiny", content=digit, headers=PNG).content
    assert result["target_bytes"] == len(stream)
    jpeg = result["codecs"][1]
    assert Image.open(io.BytesIO(base64.b64decode(jpeg["image"]))).mode == "L"
    assert jpeg["fits"] is False and jpeg["quality"] == 1  # a JPEG header alone is bigger than a 28×28 stream


def test_avif_missing_from_pillow_is_reported_not_an_error(photo_client: httpx.Client, monkeypatch) -> None:
    monkeypatch.setattr(compare, "available", lambda name: name != "avif")  # the server runs in this process
    result = photo_client.post("/compare", content=PHOTO, headers=PNG).json()
    avif = result["codecs"][-1]
    assert (avif["codec"], avif["available"], avif["bytes"], avif["image"]) == ("avif", False, None, None)
    assert "cannot write AVIF" in avif["reason"]
    assert all(c["available"] for c in result["codecs"][:-1])


@pytest.mark.parametrize(("query", "body", "status", "code"), [
    ("", b"this is not an image", 415, "unsupported_image"),
    ("", b"", 400, "empty_body"),
    ("?quality=11", PHOTO, 422, "invalid_quality"),  # natural codes 1..8 (versions 8, 9) or 1..10 (from version 10)
    ("?quality=high", PHOTO, 422, "invalid_request"),
    ("?model=tiny&quality=2", PHOTO, 422, "invalid_quality"),  # single-rate
    ("?model=nope", PHOTO, 404, "model_not_found"),
    ("?heatmap=maybe", PHOTO, 422, "invalid_request"),
])
def test_bad_requests_are_clear_4xx(photo_client: httpx.Client, query: str, body: bytes, status: int, code: str) -> None:
    assert_error(photo_client.post(f"/compare{query}", content=body, headers=PNG), status, code)


def test_one_image_per_request(photo_client: httpx.Client) -> None:
    files = [("file", (f"{i}.png", PHOTO, "image/png")) for i in range(2)]
    body = assert_error(photo_client.post("/compare", files=files), 413, "too_many_files")
    assert "one image" in body["error"]["message"]
    assert photo_client.post("/compare", files=files[:1]).status_code == 200  # one multipart file is fine


def test_the_pixel_limit_of_the_comparison(photo_client: httpx.Client, monkeypatch) -> None:
    monkeypatch.setattr(compare, "MAX_COMPARE_PIXELS", 64 * 64)
    body = assert_error(photo_client.post("/compare", content=PHOTO, headers=PNG), 413, "too_many_pixels")
    assert "4096 pixels" in body["error"]["message"]
    small = to_bytes(noise_image(32, 48, 3, seed=1))
    assert photo_client.post("/compare", content=small, headers=PNG).status_code == 200


def test_the_api_key_guards_it(model_store) -> None:
    digit = to_bytes(model_store.normal[0])
    with live_server(models_dir=model_store.path, default_model=model_store.tiny, api_keys="secret",
                     reload_interval_s=0, log_level="WARNING") as srv:
        assert_error(httpx.post(f"{srv.url}/compare", content=digit, timeout=60), 401, "unauthorized")
        assert_error(httpx.post(f"{srv.url}/compare?quality=x", content=b"junk", timeout=60), 401, "unauthorized")
        ok = httpx.post(f"{srv.url}/v1/compare", content=digit, headers={"X-API-Key": "secret"}, timeout=60)
        assert ok.status_code == 200 and ok.json()["model"] == "tiny"


def test_documented_in_openapi(photo_client: httpx.Client) -> None:
    operation = photo_client.get("/openapi.json").json()["paths"]["/compare"]["post"]
    assert {p["name"] for p in operation["parameters"]} == {"model", "version", "quality", "heatmap"}
    assert {"200", "404", "413", "415", "422"} <= set(operation["responses"])
    assert "One image" in operation["requestBody"]["description"]
