"""Decoded-pixel budgets: per request, and for all requests in flight together.

Why pixels and not bytes: what a request costs in memory and CPU is what its images decode to, not what
they weigh on the wire. A 49 KB zlib-bomb PNG decodes to 16.7 M pixels, and a 42-byte bitstream can ask
for as many. `AEC_MAX_PIXELS` bounds one image; `AEC_MAX_REQUEST_PIXELS` bounds the sum over a request's
images (from their headers, before any pixel is decoded); `AEC_MAX_PIXELS_IN_FLIGHT` bounds the sum over
every request being served. A request that fits its own budget but not the shared one waits, in arrival
order, until enough pixels are released (so a burst of big images is served a few at a time instead of
all at once), and after `AEC_REQUEST_TIMEOUT_S` gives up with 503 `overloaded` and a Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

from service.inference.errors import Overloaded, TooManyPixels


class PixelBudget:
    """Pixels held by requests in flight, at most `limit`; granted first come, first served."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._on_change = on_change

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int, timeout_s: float = 0.0) -> AsyncIterator[None]:
        """Hold `pixels` for the body of the `with`; wait for them at most `timeout_s` (0 = no limit)."""
        await self._acquire(pixels, timeout_s)
        try:
            yield
        finally:
            self._release(pixels)

    async def _acquire(self, pixels: int, timeout_s: float) -> None:
        if pixels > self.limit:  # settings validation keeps the request budget below this: a bug guard
            raise TooManyPixels(f"the request decodes to {pixels} pixels; AEC_MAX_PIXELS_IN_FLIGHT is {self.limit}")
        if not self._waiting and self.used + pixels <= self.limit:
            self._take(pixels)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pixels, granted)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(timeout_s if timeout_s > 0 else None):
                await granted
        except BaseException as exc:  # timed out, or the request was cancelled (client gone)
            if granted.done() and not granted.cancelled():
                self._release(pixels)  # granted just as we gave up: hand the pixels on
            else:
                granted.cancel()
                self._waiting.remove(entry)
                self._grant()  # a big request leaving the head may let smaller ones through
            if isinstance(exc, TimeoutError):
                raise budget_timeout(timeout_s) from None
            raise

    def _take(self, pixels: int) -> None:
        self.used += pixels
        if self._on_change is not None:
            self._on_change(self.used)

    def _release(self, pixels: int) -> None:
        self.used -= pixels
        if self._on_change is not None:
            self._on_change(self.used)
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            pixels, granted = self._waiting.popleft()
            if granted.done():
                continue
            self._take(pixels)
            granted.set_result(None)


def over_budget(pixels: int, limit: int, what: str) -> TooManyPixels:
    """The 413 for a request whose images (or streams) add up to more than AEC_MAX_REQUEST_PIXELS."""
    return TooManyPixels(f"{what} decode to {pixels} pixels in all; the limit per request is {limit} "
                         "(AEC_MAX_REQUEST_PIXELS): send fewer or smaller images per request")


def budget_timeout(timeout_s: float) -> Overloaded:
    return Overloaded(f"the service is decoding its limit of pixels for other requests and none were freed "
                      f"within {timeout_s:g} s; retry later", retry_after_s=max(1, round(timeout_s / 4)))
