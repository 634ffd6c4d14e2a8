"""The micro-batcher: grouping by shape, batch size and wait limits, failures, cancellation, close."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.inference.batcher import MicroBatcher


class Recorder:
    """A batch function that records the batch shapes it was called with (and can be slowed/failed)."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls.append(batch["x"].shape)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return {"y": batch["x"] * 2, "n": np.full(len(batch["x"]), len(batch["x"]))}


def run(coro):
    return asyncio.run(coro)


def test_concurrent_items_share_one_call() -> None:
    fn = Recorder()
    observed: list[tuple[int, list[float], float]] = []
    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.05, observer=lambda *a: observed.append(a))

    async def main():
        return await asyncio.gather(*(batcher.submit({"x": np.full((2, 2), i, np.float32)}) for i in range(5)))

    results = run(main())
    assert fn.calls == [(5, 2, 2)]
    for i, result in enumerate(results):  # each caller gets its own slice back, in order
        np.testing.assert_array_equal(result["y"], np.full((2, 2), 2 * i))
        assert result["n"] == 5
    assert observed[0][0] == 5 and len(observed[0][1]) == 5 and observed[0][2] >= 0


def test_shapes_never_mix_and_size_is_capped() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=3, max_wait_s=0.05)

    async def main():
        items = [np.zeros((2, 2)) for _ in range(7)] + [np.zeros((4, 4)) for _ in range(2)]
        return await asyncio.gather(*(batcher.submit({"x": x}) for x in items))

    results = run(main())
    assert sorted(fn.calls) == sorted([(3, 2, 2), (3, 2, 2), (1, 2, 2), (2, 4, 4)])
    assert [r["y"].shape for r in results] == [(2, 2)] * 7 + [(4, 4)] * 2


def test_lone_item_waits_at_most_max_wait() -> None:
    batcher = MicroBatcher(Recorder(), max_batch_size=64, max_wait_s=0.02)

    async def main():
        started = time.perf_counter()
        await batcher.submit({"x": np.zeros(1)})
        return time.perf_counter() - started

    assert run(main()) < 0.5


def test_batches_grow_while_the_model_is_busy() -> None:
    fn = Recorder(delay=0.05)
    batcher = MicroBatcher(fn, max_batch_size=16, max_wait_s=0.0, executor=ThreadPoolExecutor(1))

    async def main():
        first = asyncio.ensure_future(batcher.submit({"x": np.zeros(1)}))
        await asyncio.sleep(0.01)  # the first call is running now; these queue up behind it
        rest = await asyncio.gather(*(batcher.submit({"x": np.zeros(1)}) for _ in range(6)))
        return [await first, *rest]

    run(main())
    assert fn.calls == [(1, 1), (6, 1)]


def test_a_failing_batch_fails_its_items_only() -> None:
    fn = Recorder(fail=True)
    batcher = MicroBatcher(fn, max_batch_size=4, max_wait_s=0.01)

    async def main():
        results = await asyncio.gather(*(batcher.submit({"x": np.zeros(1)}) for _ in range(3)), return_exceptions=True)
        fn.fail = False
        return results, await batcher.submit({"x": np.ones(1)})

    failures, later = run(main())
    assert all(isinstance(r, RuntimeError) for r in failures)
    assert later["y"] == 2  # the batcher survived


def test_cancelled_items_are_dropped() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.05)

    async def main():
        doomed = asyncio.ensure_future(batcher.submit({"x": np.zeros(1)}))
        kept = asyncio.ensure_future(batcher.submit({"x": np.ones(1)}))
        await asyncio.sleep(0)
        doomed.cancel()
        return await kept

    assert run(main())["y"] == 2
    assert fn.calls == [(1, 1)]


def test_closed_batcher_still_answers() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.01)

    async def main():
        await batcher.submit({"x": np.zeros(1)})
        await batcher.close()
        return await batcher.submit({"x": np.ones(1)})

    assert run(main())["y"] == 2
    assert batcher.pending() == 0


@pytest.mark.parametrize("names", [("a", "b")])
def test_multiple_inputs_are_stacked_together(names) -> None:
    seen = []

    def fn(batch):
        seen.append({k: v.shape for k, v in batch.items()})
        return {"sum": batch["a"] + batch["b"]}

    batcher = MicroBatcher(fn, max_batch_size=4, max_wait_s=0.02)

    async def main():
        return await asyncio.gather(*(batcher.submit({"a": np.full(3, i), "b": np.ones(3)}) for i in range(2)))

    out = run(main())
    assert seen == [{"a": (2, 3), "b": (2, 3)}]
    np.testing.assert_array_equal(out[1]["sum"], np.full(3, 2))


class Overlap(Recorder):
    """Records how many calls ran at the same time."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.running = self.peak = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return super().__call__(batch)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_at_most_max_in_flight_batches_run_at_once(in_flight: int) -> None:
    fn = Overlap(delay=0.05)
    batcher = MicroBatcher(fn, max_batch_size=2, max_wait_s=0.0, executor=ThreadPoolExecutor(4),
                           max_in_flight=in_flight)

    async def main():
        return await asyncio.gather(*(batcher.submit({"x": np.full(1, i)}) for i in range(12)))

    results = run(main())
    assert fn.peak == in_flight  # 6 batches of 2 were available: the limit, and only it, held them back
    assert [float(r["y"][0]) for r in results] == [2.0 * i for i in range(12)]
    assert sum(shape[0] for shape in fn.calls) == 12


def test_close_waits_for_batches_in_flight() -> None:
    fn = Overlap(delay=0.05)
    batcher = MicroBatcher(fn, max_batch_size=1, max_wait_s=0.0, executor=ThreadPoolExecutor(2), max_in_flight=2)

    async def main():
        pending = [asyncio.ensure_future(batcher.submit({"x": np.full(1, i)})) for i in range(4)]
        await asyncio.sleep(0.01)
        await batcher.close()
        assert all(p.done() for p in pending)  # close returned only once every queued item was answered
        return [p.result() for p in pending]

    assert [float(r["y"][0]) for r in run(main())] == [0.0, 2.0, 4.0, 6.0]


def test_close_with_drop_queued_refuses_what_waits_and_finishes_what_runs() -> None:
    from service.inference.errors import Overloaded

    fn = Recorder(delay=0.2)
    batcher = MicroBatcher(fn, max_batch_size=1, max_wait_s=0.0, executor=ThreadPoolExecutor(1), max_in_flight=1)

    async def main():
        pending = [asyncio.ensure_future(batcher.submit({"x": np.full(1, i)})) for i in range(4)]
        await asyncio.sleep(0.05)  # the first item runs, three wait
        await batcher.close(drop_queued=True)
        return await asyncio.gather(*pending, return_exceptions=True)

    results = run(main())
    assert float(results[0]["y"][0]) == 0.0  # the running item finished with its answer
    assert all(isinstance(r, Overloaded) and "shutting down" in str(r) for r in results[1:])
    assert len(fn.calls) == 1  # none of the queued items was computed
