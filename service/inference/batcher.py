"""Micro-batching: concurrent requests for one (model, version, signature) become one TensorFlow call.

Throughput comes from here (one uvicorn worker, bigger batches), so the rules are explicit:
- items are grouped by the shapes of their inputs (a batch is one stacked tensor), oldest group first;
- a batch closes when it holds `max_batch_size` items or its oldest item has waited `max_wait_s`;
- at most `max_in_flight` batches per batcher run at a time, in a thread executor; while they run the
  next batch fills up, so under load batches grow without extra waiting and when idle a request waits
  at most `max_wait_s`. Two in flight let a CPU keep computing one batch while the event loop answers
  the previous one and decodes the next (bench/serve.py); one keeps GPU calls strictly serial;
- queue wait and compute time are reported separately to an observer (the metrics);
- the queue is bounded (`max_queue` waiting items): past it `submit` raises `Overloaded` (503 with a
  Retry-After estimated from recent batch times) at once, so overload shows up as fast refusals a
  client or load balancer can act on, not as memory and latency growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service.inference.errors import Overloaded

Arrays = dict[str, np.ndarray]
#: Runs a whole batch: inputs and outputs carry a leading batch axis.
BatchFn = Callable[[Arrays], Mapping[str, np.ndarray]]
#: observe(batch_size, queue_wait_s of each item, compute_s)
BatchObserver = Callable[[int, list[float], float], None]
ShapeKey = tuple[tuple[str, tuple[int, ...], str], ...]

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: `item in group` must never compare arrays
class _Item:
    inputs: Arrays
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.monotonic)


def shape_key(inputs: Mapping[str, np.ndarray]) -> ShapeKey:
    """Items batch together when every input has the same shape and dtype. Runs on the event loop for
    every item: `dtype.str` ('<f4') is a cached attribute, where `str(dtype)` builds a name each time.
    Any mapping of arrays works; a one-input model skips the sort."""
    items = inputs.items() if len(inputs) == 1 else sorted(inputs.items())
    return tuple((name, arr.shape, arr.dtype.str) for name, arr in items)


class MicroBatcher:
    """Gathers single items (no batch axis) into batches for `fn`; `submit` returns the item's outputs."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_batch_size: int,
        max_wait_s: float,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        name: str = "batcher",
        max_queue: int | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self.fn, self.name = fn, name
        self.max_batch_size, self.max_wait_s = max(1, max_batch_size), max(0.0, max_wait_s)
        self.max_queue = max_queue
        self._recent_compute_s = 0.0  # moving average of one batch's compute time, for Retry-After
        self.executor, self.observer = executor, observer
        self._groups: dict[ShapeKey, list[_Item]] = {}
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.max_in_flight = max(1, max_in_flight)
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Queue one item and wait for its outputs (each without the batch axis)."""
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        if self._closed:  # a version swapped out while this request held it: run alone, still correct
            return (await self._run([_Item(arrays, asyncio.get_running_loop().create_future())]))[0]
        if self.max_queue is not None and self.pending() >= self.max_queue:
            raise Overloaded(
                f"{self.name}: {self.pending()} items already wait for inference (limit {self.max_queue}); retry later",
                retry_after_s=self.retry_after_s(),
            )
        self._ensure_worker()
        item = _Item(arrays, asyncio.get_running_loop().create_future())
        group = self._groups.setdefault(shape_key(arrays), [])
        group.append(item)
        assert self._arrived is not None
        self._arrived.set()
        try:
            return await item.future
        except asyncio.CancelledError:  # timed out or disconnected: free its queue slot now
            if item in group:
                group.remove(item)  # an emptied group is dropped by the worker, its only deleter
            raise

    def pending(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def retry_after_s(self) -> int:
        """Whole seconds until the current backlog is likely computed (at least 1)."""
        batches = math.ceil(self.pending() / self.max_batch_size) + 1
        return max(1, math.ceil(batches * (self._recent_compute_s + self.max_wait_s)))

    async def close(self, *, drop_queued: bool = False) -> None:
        """Stop taking new items into batches. Items already queued are still computed, unless
        `drop_queued`: then they are refused at once with `Overloaded` (the process is going away, and a
        queue of minute-long refinements must not hold its shutdown); batches already running finish."""
        self._closed = True
        if drop_queued:
            for group in self._groups.values():
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(Overloaded(f"{self.name}: the server is shutting down; retry later"))
                group.clear()
        if self._worker is not None and self._arrived is not None:
            self._arrived.set()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._slots = asyncio.Semaphore(self.max_in_flight)
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher:{self.name}")

    async def _loop(self) -> None:
        assert self._arrived is not None and self._slots is not None
        while True:
            await self._slots.acquire()  # a free compute slot before choosing what fills it
            self._slots.release()
            for key in [key for key, group in self._groups.items() if not group]:
                del self._groups[key]
            if not self._groups:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            key = min(self._groups, key=lambda k: self._groups[k][0].enqueued)
            group = self._groups[key]
            deadline = group[0].enqueued + self.max_wait_s
            while len(group) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = group[: self.max_batch_size]
            del group[: self.max_batch_size]
            if not group:
                del self._groups[key]
            batch = [item for item in batch if not item.future.done()]  # drop cancelled requests
            if not batch:
                continue
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._complete(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _complete(self, batch: list[_Item]) -> None:
        """Run one batch and hand each item its outputs (or the batch's error); frees its slot."""
        assert self._slots is not None
        try:
            results = await self._run(batch)
        except Exception as exc:  # noqa: BLE001 -- one failing batch fails its own requests only
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            self._slots.release()
        for item, result in zip(batch, results):
            if not item.future.done():
                item.future.set_result(result)

    async def _run(self, batch: list[_Item]) -> list[Arrays]:
        started = time.monotonic()
        waits = [started - item.enqueued for item in batch]
        stacked = {name: np.stack([item.inputs[name] for item in batch]) for name in batch[0].inputs}
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self.executor, self.fn, stacked)
        compute = time.monotonic() - started
        self._recent_compute_s = compute if not self._recent_compute_s else 0.8 * self._recent_compute_s + 0.2 * compute
        if self.observer is not None:
            try:
                self.observer(len(batch), waits, compute)
            except Exception:  # metrics must never fail a request
                log.exception("batch observer failed")
        arrays = {name: np.asarray(value) for name, value in outputs.items()}
        return [{name: arr[i] for name, arr in arrays.items()} for i in range(len(batch))]
