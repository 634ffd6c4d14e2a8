"""service.inference.compare: the equal-bytes search over JPEG, WebP and AVIF quality, the measurements
and the heat map, in process (no model: `ours` stands in for a decoded stream)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.inference import compare


def _photo(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with some texture: files that grow steadily with quality."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 24.0
    base = np.stack([0.5 + 0.3 * np.sin(x + 2 * y), 0.5 + 0.2 * np.cos(3 * x - y), 0.4 + 0.1 * x / 4], -1)
    noisy = base + rng.normal(0, 0.04, base.shape)
    return np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)


AVAILABLE = [name for name in compare.CODECS if compare.available(name)]


@pytest.mark.parametrize("name", AVAILABLE)
def test_fit_is_the_largest_quality_that_fits(name: str) -> None:
    spec = compare.SPECS[name]
    image = compare.pillow_image(_photo())
    middle = len(compare.encode(image, spec, (spec.min_quality + spec.max_quality) // 2))
    found = compare.fit(image, spec, middle)
    assert found.fits and not found.at_max_quality
    assert len(found.data) <= middle
    assert found.data == compare.encode(image, spec, found.quality)  # deterministic: the file is that quality's
    assert found.next_bytes == len(compare.encode(image, spec, found.quality + 1)) > middle
    assert found.encodes == len(found.sizes) <= 8  # log2(102) rounded up


@pytest.mark.parametrize("name", AVAILABLE)
def test_fit_at_the_ends_of_the_scale(name: str) -> None:
    spec = compare.SPECS[name]
    image = compare.pillow_image(_photo(40, 48))
    top = compare.fit(image, spec, 10**9)  # room for anything: the top of the scale
    assert (top.quality, top.fits, top.at_max_quality, top.next_bytes) == (spec.max_quality, True, True, None)
    nothing = compare.fit(image, spec, 1)  # no file is one byte: its smallest file, marked as not fitting
    assert (nothing.quality, nothing.fits, nothing.at_max_quality) == (spec.min_quality, False, False)
    assert len(nothing.data) == len(compare.encode(image, spec, spec.min_quality)) > 1


def test_compare_measures_every_codec_against_the_upload() -> None:
    photo = _photo()
    ours = np.clip(photo.astype(np.int16) + 3, 0, 255).astype(np.uint8)  # a stand-in reconstruction
    target = 2500
    result = compare.compare(photo, ours, target, with_heatmap=True)
    assert result.ours.mse == pytest.approx(9 / 255**2, rel=0.05)
    assert [entry.codec for entry in result.entries] == list(compare.CODECS)
    for entry in result.entries:
        if entry.fit is None:
            assert entry.codec not in AVAILABLE and entry.reason
            continue
        decoded = np.asarray(Image.open(io.BytesIO(entry.fit.data)).convert("RGB"))
        diff = decoded.astype(np.float64) - photo
        assert entry.measured.mse == pytest.approx(np.mean((diff / 255) ** 2), rel=1e-6)
        assert entry.measured.psnr == pytest.approx(10 * np.log10(1 / entry.measured.mse))
        assert len(entry.fit.data) <= target or not entry.fit.fits
    heat = Image.open(io.BytesIO(result.heatmap))
    assert heat.size == (128, 96) and heat.mode == "RGB"


def test_grey_uploads_stay_grey() -> None:
    grey = _photo()[..., :1]
    result = compare.compare(grey, grey, 4000, codecs=["jpeg"])
    entry = result.entries[0]
    assert result.ours.psnr is None  # identical
    assert Image.open(io.BytesIO(entry.fit.data)).mode == "L"
    assert entry.measured.psnr > 20


def test_an_unavailable_codec_is_reported_not_raised(monkeypatch) -> None:
    monkeypatch.setattr(compare, "available", lambda name: name != "avif")
    photo = _photo(32, 32)
    result = compare.compare(photo, photo, 3000)
    avif = result.entries[-1]
    assert (avif.codec, avif.fit, avif.measured) == ("avif", None, None)
    assert "cannot write AVIF" in avif.reason
    assert result.entries[0].fit is not None


def test_the_heat_map_has_a_fixed_scale() -> None:
    """Twice the error is visibly hotter: the map is not rescaled to each image's own maximum."""
    photo = np.full((16, 16, 3), 128, np.uint8)
    small = compare.heatmap_overlay(photo, compare.error_map(photo, photo + np.uint8(4)))
    large = compare.heatmap_overlay(photo, compare.error_map(photo, photo + np.uint8(16)))
    clean = compare.heatmap_overlay(photo, compare.error_map(photo, photo))
    red = [int(image[..., 0].mean()) - int(image[..., 2].mean()) for image in (clean, small, large)]
    assert red[0] == 0 < red[1] < red[2]  # redder with more error, on one scale for both
    assert np.ptp(clean) == 0 and clean[0, 0, 0] == clean[0, 0, 1]  # no error: plain grey


def test_a_reconstruction_of_another_size_is_a_bug() -> None:
    with pytest.raises(ValueError, match="reconstruction"):
        compare.compare(_photo(), _photo(32, 32), 1000)
