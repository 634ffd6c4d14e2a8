"""Overload and slowness are answered, not absorbed: a full batch queue gives 503 + Retry-After at
once, an inference budget overrun gives 504, both in the one error shape, and the server recovers."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from service_helpers import assert_error, live_server, to_bytes

from service.inference.batcher import MicroBatcher
from service.inference.errors import Overloaded


@pytest.fixture(scope="module")
def digit(model_store) -> bytes:
    return to_bytes(model_store.normal[0])


async def _burst(url: str, path: str, body: bytes, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(client.post(path, content=body) for _ in range(n)))


def test_full_queue_answers_503_with_retry_after(model_store, digit: bytes) -> None:
    # One slot per batcher and a long wait for company: the first request holds the slot ~1 s.
    with live_server(models_dir=model_store.path, default_model=model_store.tiny, max_queue=1,
                     max_batch_size=64, max_wait_ms=1000, reload_interval_s=0, log_level="WARNING") as srv:
        responses = asyncio.run(_burst(srv.url, "/reconstruct", digit, 6))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
        assert set(statuses) <= {200, 503}, statuses
        for response in responses:
            if response.status_code == 503:
                body = assert_error(response, 503, "overloaded")
                assert "limit 1" in body["error"]["message"]
                assert int(response.headers["retry-after"]) >= 1
        # Nothing is left queued behind the refusals: the next request is served normally.
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            assert client.post("/reconstruct", content=digit).status_code == 200
            metrics = client.get("/metrics").text
        assert 'status="503"' in metrics


def test_inference_over_budget_answers_504_and_leaves_the_batch(model_store, digit: bytes) -> None:
    # Items wait up to 3 s for a batch; the budget is 0.3 s: every request times out, cleanly.
    with live_server(models_dir=model_store.path, default_model=model_store.tiny, request_timeout_s=0.3,
                     max_batch_size=64, max_wait_ms=3000, reload_interval_s=0, log_level="WARNING") as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as client:
        for path in ("/encode", "/reconstruct", "/anomaly-score"):
            body = assert_error(client.post(path, content=digit), 504, "timeout")
            assert "AEC_REQUEST_TIMEOUT_S" in body["error"]["message"]
        model = srv.app.state.registry.resolve("tiny")
        assert all(b.pending() == 0 for b in model._batchers.values())  # timed-out items left their batch


def test_settings_defaults_bound_the_queue_and_time() -> None:
    from service.app.config import Settings

    settings = Settings(_env_file=None)
    assert settings.max_queue >= settings.max_batch_size
    assert 0 < settings.request_timeout_s <= 120 and 0 < settings.shutdown_timeout_s <= 120


# ---- the bounded queue itself (no server) -----------------------------------------------------------
def _double(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": batch["x"] * 2}


def test_batcher_refuses_past_max_queue_and_frees_slots_of_cancelled_items() -> None:
    batcher = MicroBatcher(_double, max_batch_size=64, max_wait_s=0.5, max_queue=3)

    async def main() -> None:
        item = {"x": np.ones((2,), np.float32)}
        waiting = [asyncio.create_task(batcher.submit(item)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert batcher.pending() == 3
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(item)
        assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) >= 1
        waiting[0].cancel()  # a timed-out request gives its slot back at once...
        await asyncio.sleep(0)
        assert batcher.pending() == 2
        late = asyncio.create_task(batcher.submit(item))  # ...so a new one is accepted
        results = await asyncio.gather(*waiting[1:], late)
        assert all(np.array_equal(r["y"], [2, 2]) for r in results)
        assert batcher.pending() == 0
        await batcher.close()

    asyncio.run(main())
