"""Shutdown with refinements queued: the registry's close refuses the waiting ones (503 `overloaded`)
and lets the running one finish, on a real exported model with the effort setting."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.inference.errors import Overloaded
from service.inference.registry import ModelRegistry

NAME = "codec-effort"  # tests/conftest.py's effort_store


class _StartSignallingExecutor(ThreadPoolExecutor):
    """A one-thread executor that says when its first job has started: the test then knows that one
    refinement runs and the others wait in the queue, without reading the batcher's internals."""

    def __init__(self) -> None:
        super().__init__(1)
        self.started = threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        def run(*a, **kw):
            self.started.set()
            return fn(*a, **kw)

        return super().submit(run, *args, **kwargs)


def test_close_refuses_queued_refinements_and_finishes_the_running_one(effort_store) -> None:
    async def main():
        effort_executor = _StartSignallingExecutor()
        registry = ModelRegistry(effort_store, default_model=NAME, executor=ThreadPoolExecutor(1),
                                 effort_executor=effort_executor)
        await registry.refresh()
        model = registry.resolve(NAME)
        spec = model.card.effort
        assert spec is not None
        images = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
        inputs = {"images": images, "quality": np.float32(model.card.rate.default_quality),
                  "effort": np.int32(spec.max_effort)}
        calls = [asyncio.ensure_future(model.call(spec.signature, inputs)) for _ in range(3)]
        await asyncio.sleep(0)  # the calls reach their batcher
        while not effort_executor.started.is_set():  # the first runs; the other two wait in the queue
            await asyncio.sleep(0.01)
        await registry.close()
        results = await asyncio.gather(*calls, return_exceptions=True)
        effort_executor.shutdown(wait=True)
        return results

    results = asyncio.run(main())
    assert isinstance(results[0], dict) and results[0], results[0]  # the running one answered, with latents
    assert all(np.all(np.isfinite(v)) for v in results[0].values())
    assert all(isinstance(r, Overloaded) and "shutting down" in str(r) for r in results[1:]), results[1:]
