"""bench/load.py, briefly (5 s at concurrency 16) against the fixture server, plus proof that its
checks catch answers delivered to the wrong request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from service_helpers import LiveServer, live_server

from bench.loadlib import driver
from bench.loadlib.attacks import Attack, judge
from bench.loadlib.images import Checker, make_images


@pytest.fixture(scope="module")
def server(model_store) -> Iterator[LiveServer]:
    """Settings like the session's `server` fixture: the fixture store, small batches, no reload."""
    with live_server(models_dir=model_store.path, default_model=model_store.tiny, max_batch_size=8,
                     max_wait_ms=20, reload_interval_s=0, log_level="WARNING") as srv:
        yield srv


def test_short_load_run_is_clean(server, model_store, tmp_path) -> None:
    report = asyncio.run(driver.run_load(server.url, model=model_store.tiny, duration=5, concurrency=16, n_images=8))
    table = report.table()
    print(table)
    assert report.ok, table
    assert set(report.stats) == set(driver.ENDPOINTS)
    for endpoint, stats in report.stats.items():
        assert stats.requests > 0 and stats.errors == 0 and stats.mismatches == 0, (endpoint, table)
        assert stats.percentile(50) <= stats.percentile(99)
    assert report.rss_start and report.rss_end  # the server's /metrics reports its RSS
    assert len(report.sizes) > 2  # mixed sizes (the fixture model resizes), grey and colour
    assert json.loads(json.dumps(report.to_json()))["ok"] is True


def test_hostile_mix_gets_its_answers(server, model_store) -> None:
    """--hostile: a third of the requests are attacks; each kind gets its one right answer (no 5xx, no
    mismatch) while the ordinary requests stay correct."""
    report = asyncio.run(driver.run_load(server.url, model=model_store.tiny, duration=8, concurrency=8, n_images=4,
                                         hostile=0.35))
    table = report.table()
    print(table)
    assert report.ok, table
    attacks = {name: s for name, s in report.stats.items() if name.startswith("! ")}
    assert len(attacks) >= 9 and sum(s.requests for s in attacks.values()) > 0, table
    for name, stats in report.stats.items():
        assert stats.server_errors == stats.overloaded and stats.mismatches == 0, (name, table)


def test_an_attack_answered_wrongly_is_a_mismatch() -> None:
    attack = Attack("nan-tiff", "POST", "/reconstruct", b"", "image/tiff", 400, "non_finite_pixels")
    right = b'{"error":{"code":"non_finite_pixels","message":"..."}}'
    assert judge(attack, 400, right) is None
    assert judge(attack, 503, b"") is None  # backpressure is never wrong
    assert "HTTP 200" in judge(attack, 200, b"\x89PNG")
    assert "HTTP 500" in judge(attack, 500, b"{}")
    assert "error code" in judge(attack, 400, b'{"error":{"code":"corrupt_image","message":"x"}}')


def test_max_requests_bounds_the_count(server, model_store) -> None:
    report = asyncio.run(driver.run_load(server.url, model=model_store.tiny, duration=60, concurrency=4,
                                         max_requests=20, n_images=4))
    assert report.total.requests == 20 and report.ok
    assert report.duration_s < 60


def test_checker_catches_mixed_up_answers(server, model_store) -> None:
    images = make_images({"height": 28, "width": 28, "channels": 1, "size_policy": "resize"}, 4, seed=1)

    async def references():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await driver.record_references(client, images, {"model": model_store.tiny}, calibrated=True)

    refs = asyncio.run(references())
    checker = Checker(images, refs)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        recon = [client.post("/reconstruct", content=image.png) for image in images]
        scores = [client.post("/anomaly-score", content=image.png) for image in images]
        streams = [client.post("/encode", content=image.png) for image in images]
        decoded = [client.post("/decode", content=s.content) for s in streams]
    for i in range(4):  # the right answers pass...
        assert checker.image("reconstruct", i, recon[i]) is None
        assert checker.image("decode", i, decoded[i]) is None
        assert checker.score(i, scores[i]) is None
        assert checker.encode(i, streams[i]) is None
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 0)]:  # ...and another image's answer never does
        assert checker.image("reconstruct", i, recon[j]) is not None
        assert checker.image("decode", i, decoded[j]) is not None
        assert checker.score(i, scores[j]) is not None
        assert checker.encode(i, streams[j]) is not None


def test_refuses_non_loopback_urls() -> None:
    try:
        asyncio.run(driver.run_load("http://example.com:8000", duration=1))
    except ValueError as exc:
        assert "loopback" in str(exc)
    else:
        raise AssertionError("a non-loopback URL must be refused")
