"""Tiled transforms: cores partition the image, and with a halo at least the receptive field a tiled
encode/decode gives what the whole image gives (one bitstream, no seams); without it, seams show."""

from __future__ import annotations

import asyncio
import io
import itertools

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from service_helpers import live_server

from contract.bitstream import Bitstream
from service.inference import codec, imaging, tiling


def smooth_fields(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour fields (what a codec codes cheaply), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform()))
              for _ in range(3 * n)]
    return np.stack(planes, axis=-1).reshape(height, width, n, 3).transpose(2, 0, 1, 3).astype(np.float32)


@given(cells=st.integers(1, 60), tile=st.integers(1, 20), halo=st.integers(0, 6))
def test_spans_partition_the_image_and_add_the_halo(cells: int, tile: int, halo: int) -> None:
    length, m = cells * 64, 64
    spans = tiling.spans(length, tiling.Tiling(tile * 64, halo * 64), m)
    assert spans[0].keep0 == 0 and spans[-1].keep1 == length
    for a, b in itertools.pairwise(spans):
        assert a.keep1 == b.keep0  # cores partition [0, length)
    for s in spans:
        assert s.read0 == max(0, s.keep0 - halo * 64) and s.read1 == min(length, s.keep1 + halo * 64)
        assert all(v % m == 0 for v in (s.read0, s.read1, s.keep0, s.keep1))


def _run(model, image: np.ndarray, tiles: tiling.Tiling | None):
    async def go():
        source = imaging.SourceImage(image, 3, "PNG")
        encoded = await codec.encode(model, source, tiles)
        stream = codec.parse(encoded.stream)
        decoded, _ = await codec.decode(model, stream, 1 << 30, tiles)
        assert decoded.dtype == np.uint8  # the output comes back in 8 bits, as it is sent
        return encoded.stream, decoded.astype(np.float32) / 255

    return asyncio.run(go())


def test_tiled_equals_whole_image_with_enough_halo(codec_model) -> None:
    image = smooth_fields(1, 300, 430, seed=5)[0]  # padded to 320x448: 3x4 tiles of 128
    whole_stream, whole = _run(codec_model, image, None)
    tiled_stream, tiled = _run(codec_model, image, tiling.Tiling(tile=128, halo=192))
    a, b = Bitstream.from_bytes(whole_stream), Bitstream.from_bytes(tiled_stream)
    assert (a.height, a.width) == (b.height, b.width) == (300, 430)
    # the same latents up to a rare float tie at a rounding boundary: streams of (almost) equal length
    assert abs(len(whole_stream) - len(tiled_stream)) <= max(4, len(whole_stream) // 200)
    assert tiled.shape == whole.shape == (300, 430, 3)
    one_level = 1 / 255 + 1e-6
    assert np.max(np.abs(tiled - whole)) <= one_level  # no seams: the untiled decode's pixels, to 8-bit rounding
    # and a stream coded whole decodes tiled (the format does not depend on tiling)
    crossed = asyncio.run(codec.decode(codec_model, codec.parse(whole_stream), 1 << 30, tiling.Tiling(128, 192)))[0]
    assert np.max(np.abs(crossed.astype(np.float32) / 255 - whole)) <= one_level


def test_without_halo_the_tile_borders_show(codec_model) -> None:
    image = smooth_fields(1, 256, 256, seed=6)[0]
    _, whole = _run(codec_model, image, None)
    _, seamy = _run(codec_model, image, tiling.Tiling(tile=128, halo=0))
    diff = np.abs(seamy - whole).max(axis=-1)
    border = np.concatenate([diff[120:136].ravel(), diff[:, 120:136].ravel()])
    assert border.max() > 0.1  # visible: what the halo is for
    assert border.mean() > 2 * diff[20:100, 20:100].mean()  # and worst along the tile borders


def test_service_tiles_big_images_end_to_end(model_store) -> None:
    image = np.clip(smooth_fields(1, 200, 330, seed=7)[0], 0, 1)
    buffer = io.BytesIO()
    Image.fromarray(imaging.to_uint8(image)).save(buffer, format="PNG")
    results = {}
    for tile in (64, 4096):  # tiled (4x6 tiles) and whole
        with live_server(models_dir=model_store.path, default_model=model_store.codec, tile_size=tile, tile_halo=192,
                         reload_interval_s=0, log_level="WARNING") as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            encoded = c.post("/encode", content=buffer.getvalue())
            decoded = c.post("/decode", content=encoded.content)
            assert encoded.status_code == decoded.status_code == 200, decoded.text
            results[tile] = np.asarray(Image.open(io.BytesIO(decoded.content)), dtype=np.int16)
    assert results[64].shape == (200, 330, 3)
    assert np.abs(results[64] - results[4096]).max() <= 1  # 8-bit output: at most one level of rounding


def test_tiles_assemble_a_latent_with_its_own_horizontal_stride() -> None:
    """A latent packed to half its grid's width (`stride_x`, a checkerboard half) is cut and assembled at
    its own stride: a fake `encode` whose latent holds the pixel coordinates it was computed at gives,
    tiled, the grid the whole image gives."""
    from contract.card import LatentSpec

    spec = LatentSpec(name="half", channels=2, stride=16, stride_x=32, coding="categorical", min_symbol=0,
                      max_symbol=1 << 20)
    height, width = 320, 448
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1)

    async def call(name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert name == "encode"
        return {"half": inputs["images"][::16, ::32, :2].copy()}

    whole = asyncio.run(call("encode", {"images": image}))["half"]
    tiled = asyncio.run(tiling.encode(call, image, [spec], tiling.Tiling(tile=128, halo=64), 64))["half"]
    assert tiled.shape == whole.shape == (20, 14, 2)
    np.testing.assert_array_equal(tiled, whole)
    wrong = LatentSpec(**{**spec.model_dump(), "stride_x": None})  # cut at the vertical stride: does not fit
    with pytest.raises(ValueError, match="broadcast"):
        asyncio.run(tiling.encode(call, image, [wrong], tiling.Tiling(tile=128, halo=64), 64))
