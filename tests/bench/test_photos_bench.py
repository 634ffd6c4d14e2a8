"""bench/photos.py: its closed loop measures the throughput of long requests (not rounded to zero), and
its service rows, with either load generator, post real photos to a real server and count its answers."""

from __future__ import annotations

import asyncio

import pytest
from service_helpers import live_server, synthetic_photo

from bench.photos import closed_loop, min_completions, service_rows


def _sleeper(seconds: float, capacity: int):
    """send(): a request that holds one of `capacity` slots for `seconds` (a server with that many cores)."""
    slots = asyncio.Semaphore(capacity)

    async def send() -> bool:
        async with slots:
            await asyncio.sleep(seconds)
        return True

    return send


@pytest.mark.parametrize("concurrency, capacity", [(1, 1), (4, 2)])
def test_requests_longer_than_the_window_are_still_measured(concurrency, capacity):
    # 0.3 s requests against a 0.1 s window: a fixed window counted none of them
    n, errors, latencies, seconds = asyncio.run(closed_loop(_sleeper(0.3, capacity), concurrency, 0.1, 0.0))
    assert errors == 0 and n >= min_completions(concurrency)
    assert n / seconds == pytest.approx(capacity / 0.3, rel=0.25)
    assert min(latencies) >= 0.29 and len(latencies) == n


def test_a_cell_of_failures_ends():
    async def fail() -> bool:
        await asyncio.sleep(0)
        return False

    n, errors, _, seconds = asyncio.run(closed_loop(fail, 2, 0.05, 0.0))
    assert n == 0 and seconds == 0.0 and errors > 100


@pytest.mark.parametrize("client", ["httpx", "raw"])
def test_service_rows_post_photos_to_a_real_server(variable_rate_store, client) -> None:
    """Every endpoint answers 200 to each load generator (a wrong path, query, body or content type would
    count as an error), and a stream the server cannot parse is counted as an error, not a success."""
    import io

    import httpx
    import numpy as np
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray((synthetic_photo(96, 128, seed=3) * 255).round().astype(np.uint8)).save(png, format="PNG")
    photo = {0.01: png.getvalue()}
    with live_server(models_dir=variable_rate_store, reload_interval_s=0, log_level="WARNING") as server:
        encoded = httpx.post(f"{server.url}/encode", params={"model": "codec-vr", "quality": 1.5},
                             content=photo[0.01], headers={"Content-Type": "image/png"}, timeout=60)
        assert encoded.status_code == 200, encoded.text
        good = asyncio.run(service_rows(server.url, "codec-vr", photo, {0.01: encoded.content}, 1.5, [2],
                                        duration=0.5, warmup=0.1, client=client))
        broken = asyncio.run(service_rows(server.url, "codec-vr", photo, {0.01: b"not a stream"}, 1.5, [1],
                                          duration=0.3, warmup=0.0, client=client))
    for row in good:
        assert row.requests >= 2 and row.errors == 0, row
    assert {row.endpoint for row in good} == {"encode", "decode", "reconstruct"}
    decode = next(row for row in broken if row.endpoint == "decode")
    assert decode.requests == 0 and decode.errors > 0  # requests counts the successes
