"""MS-SSIM next to PSNR on /reconstruct: `X-MS-SSIM` and `ms_ssim`, what tf.image.ssim_multiscale gives;
null (and no header) for images under 161 px on a side or over the pixel limit, never an error."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from service_helpers import synthetic_photo, to_bytes

from service.inference import msssim

ROOT = Path(__file__).resolve().parents[3]


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return synthetic_photo(height, width, seed, periods=(4, 12), noise=0.03)


def test_the_minimum_size_and_identity() -> None:
    image = _photo(161, 170)
    assert msssim.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 0.1, image.shape), 0, 1).astype(np.float32)
    value = msssim.ms_ssim(image, noisy)
    assert value is not None and 0 < value < 1
    assert value == pytest.approx(float(tf.image.ssim_multiscale(image, noisy, max_val=1.0)), abs=1e-6)
    assert msssim.ms_ssim(image[:160], noisy[:160]) is None  # one pixel short: no value, no error
    assert msssim.ms_ssim(image[:, :160], noisy[:, :160]) is None
    grey = (image[..., :1] * 255).astype(np.uint8)  # a grey upload against the model's RGB output
    assert msssim.ms_ssim(grey, np.repeat(grey, 3, axis=-1).astype(np.float32) / 255) == pytest.approx(1.0, abs=1e-6)
    assert msssim.db(0.99) == pytest.approx(20.0) and msssim.db(None) is None


@pytest.mark.parametrize("shape, noise", [((161, 161, 3), 0.05), ((200, 333, 3), 0.1), ((257, 190, 1), 0.02),
                                          ((400, 600, 3), 0.2), ((163, 171, 3), 0.0)])
def test_the_two_pass_window_gives_what_the_library_gives(shape, noise) -> None:
    """Odd and even sides (padding at every scale), grey, the minimum size, heavy noise and none."""
    rng = np.random.default_rng(sum(shape))
    image = _photo(*shape[:2], seed=shape[1])[..., : shape[2]]
    other = np.clip(image + rng.normal(0, noise, image.shape), 0, 1).astype(np.float32)
    expected = float(tf.image.ssim_multiscale(image, other, max_val=1.0))
    assert msssim.ms_ssim(image, other) == pytest.approx(expected, abs=1e-6)


@pytest.fixture()
def photo_path() -> Path:
    """A real photo where the datasets are (McMaster 18); the synthetic cases above run everywhere."""
    real = Path(os.environ.get("AEC_DATASETS", ROOT.parent / "shared" / "datasets")) / "natural" / "McMaster" / "18.png"
    if not real.is_file():
        pytest.skip("no datasets folder here (AEC_DATASETS)")
    return real


def test_the_two_pass_window_on_a_real_photo_and_its_jpeg(photo_path: Path) -> None:
    source = Image.open(photo_path).convert("RGB")
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", quality=20)
    image = np.asarray(source, np.float32) / 255
    jpeg = np.asarray(Image.open(buffer), np.float32) / 255
    expected = float(tf.image.ssim_multiscale(image, jpeg, max_val=1.0))
    assert msssim.ms_ssim(image, jpeg) == pytest.approx(expected, abs=1e-5)  # float32 sums in another order
    np.testing.assert_allclose(np.outer(msssim.gaussian_profile(11, 1.5), msssim.gaussian_profile(11, 1.5)),
                               _library_window(), atol=1e-8)


def _library_window() -> np.ndarray:
    """tf.image's 11×11 window, as `_fspecial_gauss` builds it (a softmax over the summed squares)."""
    coords = np.arange(11, dtype=np.float32) - 5.0
    g = -0.5 * (coords[None, :] ** 2 + coords[:, None] ** 2) / 1.5**2
    return tf.nn.softmax(tf.reshape(g, [1, -1])).numpy().reshape(11, 11)


def test_the_pixel_limit_skips_the_work() -> None:
    image = _photo(200, 200)
    assert asyncio.run(msssim.measure(None, image, image, max_pixels=200 * 200 - 1)) is None
    assert asyncio.run(msssim.measure(None, image, image, max_pixels=0)) is None
    assert asyncio.run(msssim.measure(None, image, image)) == pytest.approx(1.0, abs=1e-6)


def test_reconstruct_reports_ms_ssim(server, model_store) -> None:
    pixels = _photo(200, 176, seed=2)
    body = to_bytes(pixels)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        response = client.post(f"/reconstruct?model={model_store.codec}", content=body)
        assert response.status_code == 200, response.text
        value = float(response.headers["x-ms-ssim"])
        assert 0 < value <= 1
        # what tf.image.ssim_multiscale says of the upload and the reconstruction (8-bit here: close, not equal)
        upload = np.asarray(Image.open(io.BytesIO(body)), np.float32) / 255
        output = np.asarray(Image.open(io.BytesIO(response.content)), np.float32) / 255
        assert value == pytest.approx(float(tf.image.ssim_multiscale(upload, output, max_val=1.0)), abs=2e-3)
        as_json = client.post(f"/reconstruct?model={model_store.codec}", content=body,
                              headers={"Accept": "application/json"}).json()
        assert as_json["ms_ssim"] == pytest.approx(value, abs=1e-6)

        for small, model in ((to_bytes(_photo(160, 300)), model_store.codec), (to_bytes(model_store.normal[0]), None)):
            response = client.post("/reconstruct" + (f"?model={model}" if model else ""), content=small)
            assert response.status_code == 200, response.text
            assert "x-ms-ssim" not in response.headers and "x-psnr" in response.headers
            item = client.post("/reconstruct" + (f"?model={model}" if model else ""), content=small,
                               headers={"Accept": "application/json"}).json()
            assert item["ms_ssim"] is None and item["psnr"] is not None

    from aecodec import Client

    with Client(server.url, model=model_store.codec) as c:
        assert c.reconstruct(pixels).ms_ssim == pytest.approx(value, abs=1e-6)
        assert [r.ms_ssim is None for r in c.reconstruct_batch([pixels, _photo(100, 100)])] == [False, True]
