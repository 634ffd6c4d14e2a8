"""bench/serve.py's load generator: closed-loop asyncio workers posting one payload, with httpx or a
minimal raw HTTP/1.1 client, and what the server's /metrics says about the batches it formed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from bench.launcher import ServerProcess
from bench.servelib.results import Cell

CLIENTS = ("httpx", "raw")
_METRIC = re.compile(r'^aec_batch_size_(sum|count)\{([^}]*)\}\s+(\S+)$', re.MULTILINE)


async def batch_totals(client, url: str, model: str, signature: str) -> tuple[float, float] | None:
    """(items, batches) the server's batcher has run for this model and signature, from /metrics."""
    try:
        response = await client.get(f"{url}/metrics")
    except Exception:  # noqa: BLE001 -- the mean batch is a diagnostic, never a failure
        return None
    if response.status_code != 200:
        return None
    totals = {"sum": 0.0, "count": 0.0}
    for kind, labels, value in _METRIC.findall(response.text):
        if f'model="{model}"' in labels and f'signature="{signature}"' in labels:
            totals[kind] += float(value)
    return totals["sum"], totals["count"]


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client for ONE request at a time (`--client raw`).

    It exists to measure what the server can do when the load generator costs little: httpx spends about
    as much CPU per request as the service does, and here client and server share the same cores.
    Content-Length responses only (what the service sends); anything else is an error.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"--client raw speaks plain http only, not {url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(request)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status, length, close = int(status_line.split()[1]), 0, False
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise ValueError("a chunked response (--client raw reads Content-Length bodies only)")
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            data = await self.reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def drive(
    url: str,
    endpoint: str,
    body: bytes,
    concurrency: int,
    duration: float,
    *,
    model: str | None = None,
    warmup: float = 1.0,
    api_key: str | None = None,
    server: ServerProcess | None = None,
    timeout: float = 60.0,
    client: str = "httpx",
) -> Cell:
    """`concurrency` closed-loop workers post `body` to `endpoint` for `warmup` + `duration` seconds.

    Throughput and latencies count the requests that complete inside the measured window; errors count
    every request of the cell, warm-up included. `client` is "httpx" (the default) or "raw" (RawHTTP).
    """
    import httpx

    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, not {client!r}")
    headers = {"Content-Type": "image/png"}
    if api_key:
        headers["X-API-Key"] = api_key
    params = {"model": model} if model else None
    path = f"/{endpoint}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    async with contextlib.AsyncExitStack() as stack:
        probe = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout, trust_env=False))
        if client == "httpx":
            # One client (one keep-alive connection) per worker: a single pool shared by many workers spends
            # its time in httpcore's O(connections) pool scans (encode/httpx#3215, encode/httpcore#1035),
            # which made the CLIENT the bottleneck at concurrency 64.
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            pool = [
                await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False))
                for _ in range(concurrency)
            ]

            def sender(c: httpx.AsyncClient):
                async def send() -> tuple[int, bytes]:
                    response = await c.post(f"{url}/{endpoint}", content=body, headers=headers, params=params)
                    return response.status_code, response.content

                return send

            senders = [sender(c) for c in pool]
            # Open the connections before the clock starts.
            await asyncio.gather(*(c.get(f"{url}/healthz") for c in pool), return_exceptions=True)
        else:
            raw = [RawHTTP(url) for _ in range(concurrency)]
            for conn in raw:
                stack.push_async_callback(conn.close)
            request = raw[0].request(path, body, headers)
            senders = [lambda conn=conn: conn.send(request) for conn in raw]
        signature = "encode" if endpoint == "encode" else "reconstruct"
        before_batches = before_cpu = None

        async def snapshot_at_window_start() -> None:
            nonlocal before_batches, before_cpu
            before_cpu = (time.process_time(), server.cpu_seconds() if server else None, time.perf_counter())
            before_batches = await batch_totals(probe, url, model or "", signature) if model else None

        latencies, errors = await closed_loop(senders, warmup, duration, timeout, snapshot_at_window_start)
        ended = time.perf_counter()
        after_server_cpu = server.cpu_seconds() if server else None
        after_client_cpu = time.process_time()
        after_batches = await batch_totals(probe, url, model or "", signature) if model else None

    cell = Cell(endpoint, concurrency, duration, len(latencies), len(errors), *percentiles(latencies), client=client)
    cell.error_samples = sorted(set(errors))[:3]
    if before_batches and after_batches and after_batches[1] > before_batches[1]:
        cell.mean_batch = (after_batches[0] - before_batches[0]) / (after_batches[1] - before_batches[1])
    if before_cpu is not None:
        wall = ended - before_cpu[2]  # the window plus the drain of the last requests
        cell.client_cpu = (after_client_cpu - before_cpu[0]) / wall
        if before_cpu[1] is not None and after_server_cpu is not None:
            cell.server_cpu = (after_server_cpu - before_cpu[1]) / wall
    return cell


async def closed_loop(senders: Sequence[Callable[[], Awaitable[tuple[int, bytes]]]], warmup: float, duration: float,
                      timeout: float, at_window_start: Callable[[], Awaitable[None]]) -> tuple[list[float], list[str]]:
    """One closed-loop worker per sender (each sends its next request when the previous one answered) for
    `warmup` + `duration` seconds; `at_window_start` runs when the measured window opens. The latencies
    of the 200s that complete inside the window, and every failure of the run (warm-up included)."""
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    window_start, stop = start + warmup, start + warmup + duration

    async def worker(send: Callable[[], Awaitable[tuple[int, bytes]]]) -> None:
        while (sent := time.perf_counter()) < stop:
            try:
                async with asyncio.timeout(timeout):
                    status, data = await send()
                ok = status == 200
                why = "" if ok else f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}"
            except (Exception, TimeoutError) as exc:  # noqa: BLE001 -- every failure is an error of the cell
                ok, why = False, f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            if not ok:
                errors.append(why)
            elif window_start <= done < stop:
                latencies.append(done - sent)

    async def window() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        await at_window_start()

    await asyncio.gather(window(), *(worker(send) for send in senders))
    return latencies, errors


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds of latencies in seconds; NaN for none."""
    if not latencies:
        return float("nan"), float("nan")
    ms = np.asarray(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
