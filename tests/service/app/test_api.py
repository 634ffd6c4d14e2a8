"""End to end over a real uvicorn server: every endpoint, content negotiation, batches, round trips."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import assert_error, decode_png, noise_image, to_bytes

from contract.bitstream import Bitstream
from contract.card import ModelCard


@pytest.fixture(scope="module")
def digit(model_store) -> bytes:
    return to_bytes(model_store.normal[0])


def _card(model_store, name: str) -> ModelCard:
    return ModelCard.read(model_store.path / name / "1")


# ---- health, models, docs ---------------------------------------------------------------------------
def test_health_and_ready(client: httpx.Client, model_store) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["models"] == (3 if model_store.codec else 2)


def test_models_list_and_detail(client: httpx.Client, model_store) -> None:
    listing = client.get("/models").json()
    assert listing["default_model"] == "tiny"
    by_name = {m["name"]: m for m in listing["models"]}
    assert {"tiny", "tiny-reject"} <= set(by_name)
    tiny = by_name["tiny"]
    assert tiny["is_default"] and tiny["default_version"] == 1
    assert tiny["versions"][0]["state"] == "available"
    assert tiny["versions"][0]["anomaly_threshold"] == pytest.approx(model_store.threshold)
    assert "card" not in tiny["versions"][0]

    detail = client.get("/models/tiny").json()
    assert detail["versions"][0]["card"]["tables_sha256"] == _card(model_store, "tiny").tables_sha256
    version = client.get("/models/tiny/versions/1").json()
    assert version["card"]["input"]["height"] == 28
    assert_error(client.get("/models/nope"), 404, "model_not_found")
    assert_error(client.get("/models/tiny/versions/9"), 404, "version_not_found")


def test_docs_and_openapi(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/encode", "/decode", "/reconstruct", "/anomaly-score", "/models", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    body = spec["paths"]["/encode"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
    assert "examples" in spec["components"]["schemas"]["EncodeResult"]


def test_v1_alias(client: httpx.Client, digit: bytes) -> None:
    assert client.get("/v1/healthz").status_code == 200
    assert client.get("/v1/models").json() == client.get("/models").json()
    response = client.post("/v1/encode", content=digit, headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.content[:3] == b"AEC"


def test_request_id_in_and_out(client: httpx.Client) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\t!"}).headers["x-request-id"] != "bad id\t!"


# ---- encode / decode ---------------------------------------------------------------------------------
def test_encode_raw_body(client: httpx.Client, model_store, digit: bytes) -> None:
    response = client.post("/encode", content=digit, headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    stream = response.content
    h = response.headers
    assert int(h["x-bytes"]) == len(stream)
    assert float(h["x-bpp"]) == pytest.approx(len(stream) * 8 / (28 * 28), abs=1e-6)
    assert (h["x-original-width"], h["x-original-height"], h["x-original-channels"]) == ("28", "28", "1")
    assert (h["x-model"], h["x-model-version"], h["x-size-policy"], h["x-size-action"]) == ("tiny", "1", "resize", "none")
    parsed = Bitstream.from_bytes(stream)
    assert (parsed.model, parsed.version, parsed.height, parsed.width, parsed.channels) == ("tiny", 1, 28, 28, 1)
    assert parsed.tables_hash == bytes.fromhex(_card(model_store, "tiny").tables_sha256)[:4]


def test_encode_multipart_single_and_json(client: httpx.Client, digit: bytes) -> None:
    raw = client.post("/encode", files={"file": ("digit.png", digit, "image/png")})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    as_json = client.post("/encode", files={"file": ("digit.png", digit, "image/png")},
                          headers={"Accept": "application/json"})
    body = as_json.json()
    assert base64.b64decode(body["bitstream"]) == raw.content  # deterministic coding
    assert body["bytes"] == len(raw.content) and body["filename"] == "digit.png"
    assert body["bpp"] == pytest.approx(len(raw.content) * 8 / 784)
    assert (body["model"], body["version"], body["height"], body["width"], body["channels"]) == ("tiny", 1, 28, 28, 1)


def test_multipart_batch_returns_list(client: httpx.Client, model_store) -> None:
    files = [
        ("file", ("a.png", to_bytes(model_store.normal[0]), "image/png")),
        ("file", ("b.png", to_bytes(model_store.normal[1]), "image/png")),
        ("file", ("c.jpg", to_bytes(noise_image(30, 40, 3), "JPEG"), "image/jpeg")),
    ]
    body = client.post("/encode", files=files).json()
    assert [item["filename"] for item in body] == ["a.png", "b.png", "c.jpg"]
    assert body[2]["size_action"] == "resized" and (body[2]["height"], body[2]["width"], body[2]["channels"]) == (30, 40, 3)
    streams = [("file", (f"{i}.aec", base64.b64decode(item["bitstream"]), "application/octet-stream"))
               for i, item in enumerate(body)]
    decoded = client.post("/decode", files=streams).json()
    assert [d["filename"] for d in decoded] == ["0.aec", "1.aec", "2.aec"]
    assert decode_png(base64.b64decode(decoded[2]["image"])).shape == (30, 40, 3)


@pytest.mark.parametrize("shape", [(28, 28, 1), (33, 45, 3)], ids=["model-size-grey", "resized-rgb"])
def test_encode_decode_equals_reconstruct(client: httpx.Client, shape) -> None:
    h, w, c = shape
    image = to_bytes(noise_image(h, w, c, seed=3) // 2 + 60)
    stream = client.post("/encode", content=image, headers={"Content-Type": "image/png"}).content
    decoded = client.post("/decode", content=stream, headers={"Content-Type": "application/octet-stream"})
    assert decoded.status_code == 200 and decoded.headers["content-type"] == "image/png"
    assert decoded.headers["x-model"] == "tiny"
    reconstructed = client.post("/reconstruct", content=image, headers={"Content-Type": "image/png"})
    a, b = decode_png(decoded.content), decode_png(reconstructed.content)
    assert a.shape == ((h, w) if c == 1 else (h, w, c))  # original size AND channels
    np.testing.assert_array_equal(a, b)


def test_decode_json_and_format(client: httpx.Client, digit: bytes) -> None:
    stream = client.post("/encode", content=digit).content
    body = client.post("/decode", content=stream, headers={"Accept": "application/json"}).json()
    assert body["media_type"] == "image/png" and (body["height"], body["width"], body["channels"]) == (28, 28, 1)
    webp = client.post("/decode?format=webp", content=stream)
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
    pinned = client.post("/decode?model=tiny&version=1", files={"file": ("x.aec", stream)})
    assert pinned.status_code == 200


# ---- reconstruct ---------------------------------------------------------------------------------
def test_reconstruct_headers_and_formats(client: httpx.Client, model_store, digit: bytes) -> None:
    response = client.post("/reconstruct", content=digit, headers={"Content-Type": "image/png"})
    assert response.headers["content-type"] == "image/png"
    mse, psnr = float(response.headers["x-mse"]), float(response.headers["x-psnr"])
    assert psnr == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
    original = decode_png(digit).astype(float) / 255
    output = decode_png(response.content).astype(float) / 255
    assert np.mean((original - output) ** 2) == pytest.approx(mse, abs=2e-4)  # only 8-bit rounding apart
    jpeg = client.post("/reconstruct", content=digit, headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    as_json = client.post("/reconstruct?format=webp", content=digit, headers={"Accept": "application/json"}).json()
    assert as_json["media_type"] == "image/webp" and as_json["mse"] == pytest.approx(mse)
    assert Image.open(io.BytesIO(base64.b64decode(as_json["image"]))).size == (28, 28)


def test_image_formats_and_modes_accepted(client: httpx.Client) -> None:
    rgb = noise_image(28, 28, 3, seed=5)
    rgba = np.concatenate([rgb, np.full((28, 28, 1), 128, np.uint8)], axis=-1)
    payloads = {
        "png-grey": to_bytes(noise_image(28, 28)),
        "png-rgba": to_bytes(rgba),
        "png-palette": to_bytes(rgb, mode="P"),
        "jpeg": to_bytes(rgb, "JPEG"),
        "webp": to_bytes(rgb, "WEBP"),
        "bmp": to_bytes(rgb, "BMP"),
        "tiff": to_bytes(noise_image(28, 28), "TIFF"),
    }
    for label, data in payloads.items():
        response = client.post("/reconstruct", content=data)
        assert response.status_code == 200, (label, response.text)
        assert response.headers["x-original-channels"] == ("1" if label in {"png-grey", "tiff"} else "3"), label


# ---- anomaly -------------------------------------------------------------------------------------
def test_anomaly_score(client: httpx.Client, model_store, digit: bytes) -> None:
    normal = client.post("/anomaly-score", content=digit).json()
    assert set(normal) >= {"score", "threshold", "is_anomaly", "model", "version"}
    assert normal["threshold"] == pytest.approx(model_store.threshold)
    assert normal["is_anomaly"] is False and normal["heatmap"] is None
    strange = client.post("/anomaly-score", content=to_bytes(noise_image(28, 28, seed=9))).json()
    assert strange["is_anomaly"] is True and strange["score"] > normal["score"]
    # normalised: the threshold sits at 0.5, normal below, anomalous above, all within [0, 1]
    assert 0.0 <= normal["normalized_score"] <= 0.5 < strange["normalized_score"] <= 1.0


def test_anomaly_heatmap_at_original_size_and_batch(client: httpx.Client, digit: bytes) -> None:
    files = [("file", ("a.png", digit, "image/png")),
             ("file", ("b.png", to_bytes(noise_image(50, 30)), "image/png"))]
    body = client.post("/anomaly-score?heatmap=true", files=files).json()
    assert [item["filename"] for item in body] == ["a.png", "b.png"]
    heat = Image.open(io.BytesIO(base64.b64decode(body[1]["heatmap"])))
    assert heat.format == "PNG" and heat.size == (30, 50) and heat.mode == "RGB"
    assert body[1]["error_map"] is None  # raw values only when asked for


def test_anomaly_raw_error_map_matches_the_overlay(client: httpx.Client, digit: bytes) -> None:
    image = noise_image(50, 30, seed=4)
    body = client.post("/anomaly-score?heatmap=true&error_map=true", content=to_bytes(image)).json()
    values = np.asarray(body["error_map"])
    assert values.shape == (50, 30) and np.all(values >= 0) and values.max() > 0
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap"]))), dtype=np.float64)
    hot, cold = np.unravel_index(values.argmax(), values.shape), np.unravel_index(values.argmin(), values.shape)
    assert overlay[hot][0] > overlay[cold][0]  # red where the error peaks, dim where it is smallest
    assert overlay[hot][0] >= 200
    # the score is the model's reduction of this map: a larger map means a larger score
    calm = client.post("/anomaly-score?error_map=true", content=digit).json()
    assert np.mean(calm["error_map"]) < values.mean() and calm["score"] < body["score"]


def test_anomaly_without_calibration_is_409(client: httpx.Client, digit: bytes) -> None:
    assert_error(client.post("/anomaly-score?model=tiny-reject", content=digit), 409, "anomaly_not_calibrated")


# ---- the any-size codec ------------------------------------------------------------------------------
def test_codec_any_size_roundtrip(client: httpx.Client, model_store) -> None:
    rng = np.random.default_rng(1)
    image = to_bytes(np.clip(rng.normal(0.5, 0.1, (50, 70, 3)), 0, 1))
    encoded = client.post(f"/encode?model={model_store.codec}", content=image)
    assert encoded.status_code == 200, encoded.text
    assert encoded.headers["x-size-policy"] == "pad" and encoded.headers["x-size-action"] == "padded"
    assert float(encoded.headers["x-bpp"]) == pytest.approx(len(encoded.content) * 8 / (50 * 70), abs=1e-6)
    decoded = client.post("/decode", content=encoded.content)
    assert decoded.status_code == 200, decoded.text
    reconstructed = client.post(f"/reconstruct?model={model_store.codec}", content=image)
    a, b = decode_png(decoded.content), decode_png(reconstructed.content)
    assert a.shape == (50, 70, 3)
    np.testing.assert_array_equal(a, b)
    grey = client.post(f"/reconstruct?model={model_store.codec}", content=to_bytes(noise_image(20, 30)))
    assert decode_png(grey.content).shape == (20, 30)  # grey in, grey out from an RGB model


# ---- batching and metrics ------------------------------------------------------------------------
def _histogram_counts(metrics: str, name: str, signature: str) -> tuple[float, float]:
    """(observations in the le=1 bucket, all observations) of a batch-size histogram."""
    le1 = total = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket") and f'signature="{signature}"' in line and 'le="1.0"' in line:
            le1 += float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{name}_count") and f'signature="{signature}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return le1, total


def test_batch_is_one_tf_call_and_metrics(client: httpx.Client, model_store) -> None:
    files = [("file", (f"{i}.png", to_bytes(model_store.normal[i % len(model_store.normal)]), "image/png"))
             for i in range(6)]
    before = _histogram_counts(client.get("/metrics").text, "aec_batch_size", "anomaly_score")
    assert len(client.post("/anomaly-score", files=files).json()) == 6
    metrics = client.get("/metrics").text
    after = _histogram_counts(metrics, "aec_batch_size", "anomaly_score")
    calls, singles = after[1] - before[1], after[0] - before[0]
    assert calls < 6 and singles < calls + 1  # six images, fewer TF calls: at least one real batch
    for name in ("aec_requests_total", "aec_request_duration_seconds_bucket", "aec_batch_size_bucket",
                 "aec_batch_queue_wait_seconds_bucket", "aec_batch_compute_seconds_bucket", "aec_encode_bpp_bucket",
                 "aec_model_versions_loaded"):
        assert name in metrics, name
    assert 'aec_requests_total{endpoint="/anomaly-score",model="tiny",status="200"}' in metrics


def test_concurrent_requests_all_served(server, model_store) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as ac:
            images = [to_bytes(model_store.normal[i % len(model_store.normal)]) for i in range(12)]
            return await asyncio.gather(*(ac.post("/reconstruct", content=img) for img in images))

    assert [r.status_code for r in asyncio.run(burst())] == [200] * 12
