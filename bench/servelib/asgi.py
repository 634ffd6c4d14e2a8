"""The app without its HTTP server (`bench/serve.py --asgi`): the service's ASGI app called directly.

    python -m bench.servelib.asgi --endpoints reconstruct,encode --png digit.png --concurrency 1,64 --duration 8
    # AEC_ settings from the environment, as `python -m service` reads them; prints one JSON line

The same `create_app(Settings())` that `python -m service` serves, with its lifespan (models loaded,
warmed and checked, heap frozen), driven by closed-loop asyncio workers that each hand it one POST of the
payload as ASGI messages and wait for the answer, with no socket, no HTTP parsing and no uvicorn. What a
request costs here is the service's own work (routing, uploads, decoding, batching, the model, the
answer, headers, access log, metrics); with the `/floor` rows (the HTTP server with no app) it splits
the service's CPU per request into what the server costs and what the app costs, and what is left over
is the two of them sharing one process and one GIL. Its CPU per image counts the driving workers too
(a few coroutine steps a request, no parsing), so it is a slight overestimate of the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.process_env import configure_tensorflow_env

configure_tensorflow_env()  # before TensorFlow is imported, as `python -m service` does

from bench.servelib.client import closed_loop, percentiles

if TYPE_CHECKING:
    from bench.servelib.results import Cell


def _request(endpoint: str, query: str, body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scope and receive messages uvicorn would hand the app for this POST (one body chunk)."""
    path = f"/{endpoint}"
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }
    return scope, [{"type": "http.request", "body": body, "more_body": False}]


async def call(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[int, bytes]:
    """One request through the ASGI app: (status, body)."""
    pending = list(messages)
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # like a connection that stays open: no disconnect while answering
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, send)  # a copy: the app records the route it matched on its scope
    return status, b"".join(chunks)


async def drive(app: Any, endpoint: str, query: str, body: bytes, concurrency: int, duration: float,
                warmup: float, timeout: float = 60.0) -> dict[str, Any]:
    """`concurrency` workers for `warmup` + `duration` s, as bench/servelib/client.drive does over HTTP
    (the same closed loop), each handing the app the request as ASGI messages."""
    scope, messages = _request(endpoint, query, body)
    cpu_at: list[tuple[float, float]] = []

    async def window_opens() -> None:
        cpu_at.append((time.process_time(), time.perf_counter()))

    senders = [lambda: call(app, scope, messages)] * concurrency
    latencies, errors = await closed_loop(senders, warmup, duration, timeout, window_opens)
    cpu, wall = time.process_time() - cpu_at[0][0], time.perf_counter() - cpu_at[0][1]
    p50, p99 = percentiles(latencies)
    return {"images": len(latencies), "seconds": duration, "errors": len(errors),
            "error_samples": sorted(set(errors))[:3], "p50_ms": p50, "p99_ms": p99, "cores": cpu / wall}


async def run(endpoints: list[str], model: str | None, body: bytes, concurrency: list[int], duration: float,
              warmup: float) -> list[dict[str, Any]]:
    """Every (endpoint, concurrency) cell against one app (loaded once), in that order."""
    from service.app.config import Settings
    from service.app.main import create_app
    from service.app.server import tune_allocator

    tune_allocator()  # as `python -m service` starts

    app = create_app(Settings())
    query = urllib.parse.urlencode({"model": model}) if model else ""
    async with app.router.lifespan_context(app):
        return [{"endpoint": endpoint, "concurrency": n, **await drive(app, endpoint, query, body, n, duration, warmup)}
                for endpoint in endpoints for n in concurrency]


def measure(endpoints: Sequence[str], png: bytes, concurrency: Sequence[int], duration: float, *, warmup: float,
            model: str | None, settings: dict[str, object], env: dict[str, str] | None = None,
            timeout: float = 900.0) -> list[Cell]:
    """The `asgi` cells (client "asgi"): this module in a subprocess (its own TensorFlow and GIL, configured
    by `settings` and `env` as `bench.launcher.server_process` configures the server), its log in a
    temporary file."""
    import subprocess
    import tempfile

    from bench.launcher import ROOT, server_env
    from bench.servelib.results import Cell

    with tempfile.TemporaryDirectory(prefix="aec-asgi-") as tmp:
        payload, log = Path(tmp) / "payload.png", Path(tmp) / "app.log"
        payload.write_bytes(png)
        command = [sys.executable, "-m", "bench.servelib.asgi", "--endpoints", ",".join(endpoints),
                   "--png", str(payload), "--concurrency", ",".join(map(str, concurrency)),
                   "--duration", str(duration), "--warmup", str(warmup)]
        with open(log, "wb") as stderr:
            done = subprocess.run(command + (["--model", model] if model else []), cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=stderr, env=server_env(0, settings, env), timeout=timeout, check=False)
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"bench.servelib.asgi exited {done.returncode}:\n{tail}")
    cells = []
    for result in json.loads(done.stdout.decode().strip().splitlines()[-1]):
        cell = Cell(result["endpoint"], result["concurrency"], result["seconds"], result["images"], result["errors"],
                    result["p50_ms"], result["p99_ms"], client="asgi", server_cpu=result["cores"])
        cell.error_samples = result["error_samples"]
        cells.append(cell)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", default="reconstruct", help="comma-separated")
    parser.add_argument("--model")
    parser.add_argument("--png", type=Path, required=True, help="the payload posted as a raw body")
    parser.add_argument("--concurrency", default="64", help="comma-separated worker counts")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.endpoints.split(","), args.model, args.png.read_bytes(),
                             [int(n) for n in args.concurrency.split(",")], args.duration, args.warmup))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
