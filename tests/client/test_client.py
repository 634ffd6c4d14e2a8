"""The Python client against the live fixture server: every call, every input kind, typed errors,
and the async twin giving the same answers."""

from __future__ import annotations

import asyncio
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import MAX_UPLOAD, decode_png, live_server, noise_image, to_bytes

from aecodec import (
    AnomalyNotCalibrated,
    AsyncClient,
    BitstreamMismatch,
    Client,
    ConnectionFailed,
    EncodedImage,
    InvalidBitstream,
    InvalidImage,
    ModelNotFound,
    PayloadTooLarge,
    ServiceError,
    VersionNotFound,
)
from contract.bitstream import Bitstream


@pytest.fixture(scope="module")
def api(server) -> Client:
    with Client(server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def digit(model_store) -> np.ndarray:
    return model_store.normal[0]  # float [28, 28, 1] in [0, 1]


def test_encode_decode_match_the_http_api(api: Client, client: httpx.Client, digit, tmp_path) -> None:
    png = to_bytes(digit)
    encoded = api.encode(png)
    raw = client.post("/encode", content=png)
    assert isinstance(encoded, EncodedImage) and encoded.data == raw.content and bytes(encoded) == raw.content
    assert encoded.bpp == pytest.approx(len(raw.content) * 8 / (28 * 28))
    assert (encoded.model, encoded.version, encoded.width, encoded.height, encoded.channels) == ("tiny", 1, 28, 28, 1)
    decoded = api.decode(encoded)
    assert isinstance(decoded, Image.Image) and decoded.size == (28, 28) and decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), decode_png(client.post("/decode", content=raw.content).content))
    path = encoded.save(tmp_path / "digit.aec")
    assert np.array_equal(np.asarray(api.decode(path)), np.asarray(decoded))  # a path works too
    assert api.decode(raw.content, format="webp").format == "WEBP"


def test_every_image_input_kind_gives_the_same_stream(api: Client, digit, tmp_path) -> None:
    png = to_bytes(digit)
    (tmp_path / "d.png").write_bytes(png)
    u8 = np.clip(np.rint(digit * 255), 0, 255).astype(np.uint8)
    inputs = [png, bytearray(png), tmp_path / "d.png", str(tmp_path / "d.png"), io.BytesIO(png),
              Image.open(io.BytesIO(png)), u8, u8[..., 0], u8[..., 0].astype(np.float32) / 255.0]
    streams = {api.encode(image).data for image in inputs}
    assert len(streams) == 1, "every input kind must reach the service as the same pixels"
    with pytest.raises(TypeError):
        api.encode(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        api.encode(np.zeros((4, 4, 2), np.uint8))


def test_reconstruct_and_anomaly_score(api: Client, client: httpx.Client, digit, model_store) -> None:
    png = to_bytes(digit)
    result = api.reconstruct(png)
    raw = client.post("/reconstruct", content=png)
    assert result.mse == pytest.approx(float(raw.headers["x-mse"]), rel=1e-6)
    assert result.psnr == pytest.approx(float(raw.headers["x-psnr"]), rel=1e-4) and math.isfinite(result.psnr)
    assert np.array_equal(np.asarray(result.image), decode_png(raw.content)) and result.image.size == (28, 28)
    scored = api.anomaly_score(png, heatmap=True)
    assert scored.threshold == pytest.approx(model_store.threshold) and scored.is_anomaly is False
    assert scored.score == pytest.approx(client.post("/anomaly-score", content=png).json()["score"])
    assert scored.heatmap is not None and scored.heatmap.size == (28, 28) and scored.heatmap.mode == "RGB"
    assert api.anomaly_score(png).heatmap is None and scored.error_map is None
    raw_map = api.anomaly_score(png, error_map=True).error_map
    assert raw_map is not None and raw_map.shape == (28, 28) and raw_map.dtype == np.float32


def test_batches_keep_order_and_match_single_calls(api: Client, model_store) -> None:
    images = [model_store.normal[0], model_store.normal[1], noise_image(30, 40, 3, seed=4)]
    encoded = api.encode_batch(images)
    assert [e.data for e in encoded] == [api.encode(image).data for image in images]
    assert [(e.width, e.height, e.channels) for e in encoded] == [(28, 28, 1), (28, 28, 1), (40, 30, 3)]
    decoded = api.decode_batch(encoded)
    assert [d.size for d in decoded] == [(28, 28), (28, 28), (40, 30)]
    recon = api.reconstruct_batch(images)
    assert [r.mse for r in recon] == pytest.approx([api.reconstruct(image).mse for image in images], rel=1e-5)
    scores = api.anomaly_score_batch(images[:2], heatmap=True)
    assert [s.score for s in scores] == pytest.approx([api.anomaly_score(i).score for i in images[:2]], rel=1e-5)
    assert len(api.encode_batch(images[:1])) == 1  # a batch of one is still a list


def test_models_and_ready(api: Client, model_store) -> None:
    models = {m.name: m for m in api.models()}
    assert {"tiny", "tiny-reject"} <= set(models)
    tiny = models["tiny"]
    assert tiny.is_default and tiny.default_version == 1
    assert tiny.versions[0].state == "available" and tiny.versions[0].input["height"] == 28
    assert tiny.versions[0].anomaly_threshold == pytest.approx(model_store.threshold)
    assert api.ready() is True


def test_errors_are_typed(api: Client, digit, server) -> None:
    png = to_bytes(digit)
    with pytest.raises(ModelNotFound) as missing:
        api.encode(png, model="nope")
    assert missing.value.status == 404 and missing.value.code == "model_not_found" and missing.value.request_id
    with pytest.raises(VersionNotFound):
        api.encode(png, version=9)
    with pytest.raises(InvalidImage) as invalid:
        api.encode(b"not an image")
    assert invalid.value.status == 415 and invalid.value.code == "unsupported_image"
    with pytest.raises(InvalidBitstream):
        api.decode(b"not a stream")
    with pytest.raises(BitstreamMismatch):
        _decode_forged(api, png)
    with pytest.raises(PayloadTooLarge) as big:
        api.encode(b"\0" * (MAX_UPLOAD + 1))
    assert big.value.status == 413
    with pytest.raises(AnomalyNotCalibrated):
        api.anomaly_score(png, model="tiny-reject")
    with Client("http://127.0.0.1:9", timeout=2) as dead, pytest.raises(ConnectionFailed) as down:
        dead.models()  # port 9 (discard): nothing listens on loopback
    assert down.value.status == 0
    assert all(issubclass(e, ServiceError) for e in (ModelNotFound, InvalidImage, PayloadTooLarge, ConnectionFailed))


def _decode_forged(api: Client, png: bytes) -> None:
    parsed = Bitstream.from_bytes(api.encode(png).data)
    forged = Bitstream(parsed.model, parsed.version, b"\x00\x00\x00\x00", parsed.height, parsed.width,
                       parsed.channels, parsed.latents)
    api.decode(forged.to_bytes())


def test_default_model_on_the_client(server, digit) -> None:
    png = to_bytes(digit)
    with Client(server.url, model="tiny-reject") as pinned:
        assert pinned.encode(png).model == "tiny-reject"
        assert pinned.encode(png, model="tiny").model == "tiny"


def test_async_client_gives_the_same_answers(server, api: Client, model_store) -> None:
    images = [to_bytes(model_store.normal[i]) for i in range(4)]

    async def main():
        async with AsyncClient(server.url, timeout=30) as aclient:
            encoded = await asyncio.gather(*(aclient.encode(image) for image in images))
            decoded = await asyncio.gather(*(aclient.decode(e) for e in encoded))
            scores = await aclient.anomaly_score_batch(images)
            models = await aclient.models()
            with pytest.raises(ModelNotFound):
                await aclient.reconstruct(images[0], model="nope")
            return encoded, decoded, scores, models

    encoded, decoded, scores, models = asyncio.run(main())
    assert [e.data for e in encoded] == [api.encode(image).data for image in images]
    assert [np.asarray(d).tolist() for d in decoded] == [np.asarray(api.decode(e)).tolist() for e in encoded]
    assert [s.score for s in scores] == pytest.approx([api.anomaly_score(i).score for i in images], rel=1e-5)
    assert {m.name for m in models} == {m.name for m in api.models()}


def test_api_key_is_sent(model_store, digit) -> None:
    from aecodec import Unauthorized

    with live_server(probe="/healthz", models_dir=model_store.path, default_model="tiny", api_keys="s3cret",
                     reload_interval_s=0, log_level="WARNING") as srv:
        with Client(srv.url) as anonymous, pytest.raises(Unauthorized):
            anonymous.models()
        with Client(srv.url, api_key="s3cret") as keyed:
            assert keyed.encode(to_bytes(digit)).model == "tiny"
