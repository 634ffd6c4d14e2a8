"""bench/photos.py's closed loop: the throughput of long requests is measured, not rounded to zero."""

from __future__ import annotations

import asyncio

import pytest

from bench.photos import closed_loop, min_completions


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
