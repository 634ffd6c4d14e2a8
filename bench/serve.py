"""Service throughput: `/reconstruct` and `/encode` over HTTP next to the SavedModel called in-process.

    python bench/serve.py                      # models_store/mnist, 10 s per cell, concurrency 1,8,64
    python bench/serve.py --client httpx,raw --json out.json

What it measures, in one run (so the numbers share the machine's load at that moment):
1. in-process: `tf.saved_model.load` of the served version dir; the `reconstruct` signature at batch 1,
   at the batcher's max batch and at `--extra-batch` (256 by default, the size the issue's target was
   measured at); `encode` + range coding (`contract.entropy`) + bitstream header, since `/encode`
   range-codes too; and reconstruct at max batch with the PNG decode/encode a request needs. img/s, and
   CPU ms per image (all threads of this process), comparable with the server's "srv ms/img".
2. the service: started as a SUBPROCESS (`python -m service` with AEC_ settings on a free loopback port,
   ready when /readyz says 200) so client and server do not share a GIL; or `--url` for a running
   server. N closed-loop asyncio workers post one real PNG digit as a raw body (each sends its next
   request when the previous one answered); any non-200 or transport error counts as an error. Per cell:
   img/s, p50/p99 latency, errors, the mean batch the server formed (from /metrics), the cores the client
   and the server kept busy, and the server's CPU ms per image (robust to other jobs on the machine,
   unlike img/s).
   `--client httpx` (default) is the asyncio httpx client, one AsyncClient per worker; `--client raw` is a
   minimal HTTP/1.1 client that costs several times less CPU per request, to see the server without
   the load generator's share of the cores.
3. ratio lines: service img/s / in-process img/s at each in-process batch size.
4. with `--floor`, the same cells against the service's HTTP server with nothing behind it
   (`bench/servelib/floor.py`: same uvicorn configuration, protocol and limits, a fixed small PNG for
   every POST): rows `/floor`, what a request costs before any of the service's own work.
5. with `--asgi`, the same cells against the service's app called directly through ASGI in a subprocess
   (`bench/servelib/asgi.py`: the same app, settings and lifespan, no socket and no HTTP server): rows
   with client `asgi`, what the app costs without the server (next to the floor's rows: which of the two
   a request's CPU goes to).
6. with `--bare`, the same cells against the bare path (`bench/servelib/bare.py`: the service's server,
   app and lifespan, but every POST answered by the least a /reconstruct can do: Pillow decode, the
   model's batcher, MSE, PNG): rows `/bare`, the ceiling of a Python service on this machine.

On a small machine (2 cores, shared) client and server compete for the cores, and per request the httpx
client spends about as much CPU as the service's HTTP stack (uvicorn + Starlette/FastAPI routing,
dependencies, middleware, access log); at batch >= 8 the model itself is the smaller part.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages importable
    sys.path.insert(0, str(ROOT))
from service.process_env import configure_tensorflow_env

configure_tensorflow_env()  # as `python -m service` starts TensorFlow: quiet, its CPU pool

import numpy as np

from bench.launcher import ServerProcess, server_process
from bench.servelib.asgi import measure as asgi_cells
from bench.servelib.client import drive
from bench.servelib.inprocess import measure_inprocess
from bench.servelib.results import Cell, InProcess, Report, format_report

ENDPOINTS = ("reconstruct", "encode")
#: MNIST test split in IDX form, relative to the repo root (the shared datasets folder of this machine).
DEFAULT_IDX = ROOT.parent / "shared" / "datasets" / "mnist-t10k"
#: The first test image of the conventional split (training uses 0..7999).
DEFAULT_DIGIT_INDEX = 8000


# ---- the payload -------------------------------------------------------------------------------------
def digit_png(image: Path | None = None, idx_dir: Path | None = None, index: int = DEFAULT_DIGIT_INDEX) -> bytes:
    """PNG bytes to post: `image` as is; else digit `index` of an MNIST IDX folder; else a drawn '7'."""
    if image is not None:
        return Path(image).read_bytes()
    from PIL import Image, ImageDraw

    idx_dir = DEFAULT_IDX if idx_dir is None else Path(idx_dir)
    path = idx_dir / "t10k-images-idx3-ubyte.gz"
    if path.is_file():
        with gzip.open(path, "rb") as f:
            header = np.frombuffer(f.read(16), dtype=">u4")
            count, rows, cols = int(header[1]), int(header[2]), int(header[3])
            f.seek(16 + (index % count) * rows * cols)
            pixels = np.frombuffer(f.read(rows * cols), dtype=np.uint8).reshape(rows, cols)
        picture = Image.fromarray(pixels)  # uint8 [28, 28]: mode L
    else:  # no dataset here: a digit-like stroke, still a real grey 28x28 PNG
        picture = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(picture).line([(7, 7), (21, 7), (12, 23)], fill=255, width=3)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- the run --------------------------------------------------------------------------------------------
def newest_version(models_dir: Path, model: str) -> Path:
    versions = [p for p in (Path(models_dir) / model).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise SystemExit(f"no version directory under {Path(models_dir) / model}")
    return max(versions, key=lambda p: int(p.name))


def run(
    *,
    models_dir: Path,
    model: str,
    duration: float,
    concurrency: Sequence[int],
    endpoints: Sequence[str] = ENDPOINTS,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
    url: str | None = None,
    png: bytes | None = None,
    extra_batches: Sequence[int] = (256,),
    warmup: float = 1.0,
    api_key: str | None = None,
    extra_env: dict[str, str] | None = None,
    inprocess: bool = True,
    clients: Sequence[str] = ("httpx",),
    floor: bool = False,
    asgi: bool = False,
    bare: bool = False,
    log=print,
) -> Report:
    """In-process rows first (the server is not running yet, so they do not compete), then the cells."""
    from service.app.config import Settings

    png = png if png is not None else digit_png()
    defaults = Settings(_env_file=None)
    batch_size = max_batch_size or defaults.max_batch_size
    wait_ms = max_wait_ms if max_wait_ms is not None else (None if url else defaults.max_wait_ms)
    version_dir = newest_version(models_dir, model) if inprocess else None
    rows: list[InProcess] = []
    if version_dir is not None:
        batches = sorted({1, batch_size, *extra_batches})
        log(f"in-process: {version_dir} at batch {', '.join(map(str, batches))} ({duration:g} s each)")
        rows = measure_inprocess(version_dir, png, batches, duration, batch_size)
    cells: list[Cell] = []

    async def all_cells(server: ServerProcess) -> None:
        for client in clients:
            for endpoint in endpoints:
                for n in concurrency:
                    log(f"service: /{endpoint} at concurrency {n}, {client} client ({warmup:g} s warm-up + {duration:g} s)")
                    cells.append(await drive(server.url, endpoint, png, n, duration, model=model, warmup=warmup,
                                             api_key=api_key, server=server, client=client))

    async def named_cells(server: ServerProcess, name: str, model: str | None = None) -> None:
        """The cells of a reference server (floor, bare): every POST path is its one route."""
        for client in clients:
            for n in concurrency:
                log(f"{name}: concurrency {n}, {client} client ({warmup:g} s warm-up + {duration:g} s)")
                cells.append(await drive(server.url, name, png, n, duration, model=model, warmup=warmup,
                                         server=server, client=client))

    # nothing changes under a benchmark: no reload poller on the loop
    settings = {"models_dir": Path(models_dir).resolve(), "default_model": model, "reload_interval_s": 0,
                "max_batch_size": batch_size, **({} if wait_ms is None else {"max_wait_ms": wait_ms})}
    if url:
        asyncio.run(all_cells(ServerProcess(url.rstrip("/"))))
    else:
        log(f"starting python -m service (AEC_MAX_BATCH_SIZE={batch_size}, AEC_MAX_WAIT_MS={wait_ms:g})")
        with server_process(env=extra_env, stop_timeout=20, **settings) as server:
            asyncio.run(all_cells(server))
    if bare:
        log("starting the bare path (python -m bench.servelib.bare)")
        with server_process(module="bench.servelib.bare", env=extra_env, stop_timeout=20, **settings) as server:
            asyncio.run(named_cells(server, "bare", model))
    if asgi:
        log(f"the app through ASGI (python -m bench.servelib.asgi): {len(endpoints) * len(concurrency)} cells")
        cells += asgi_cells(endpoints, png, concurrency, duration, warmup=warmup, model=model, settings=settings,
                            env=extra_env)
    if floor:
        log("starting the server floor (python -m bench.servelib.floor)")
        with server_process(module="bench.servelib.floor", env=extra_env, stop_timeout=20) as server:
            asyncio.run(named_cells(server, "floor"))
    return Report(model, str(version_dir) if version_dir else None, batch_size, wait_ms, duration,
                  os.cpu_count() or 0, len(png), rows, cells)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models_store")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell and per in-process row")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated worker counts")
    parser.add_argument("--client", default="httpx",
                        help="load generator(s), comma-separated: httpx (default), raw (a minimal HTTP/1.1 client\n"
                             "that costs little CPU, to see the server without httpx's share of the cores)")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated: reconstruct,encode")
    parser.add_argument("--max-batch-size", type=int, help="AEC_MAX_BATCH_SIZE for the server (default: the service's)")
    parser.add_argument("--max-wait-ms", type=float, help="AEC_MAX_WAIT_MS for the server (default: the service's)")
    parser.add_argument("--extra-batch", default="256", help="more in-process batch sizes (comma-separated; '' for none)")
    parser.add_argument("--server-env", action="append", default=[], metavar="AEC_X=V",
                        help="more environment for the server subprocess (repeatable)")
    parser.add_argument("--url", help="bench this running server instead of starting one")
    parser.add_argument("--api-key", help="X-API-Key for a server that requires one")
    parser.add_argument("--image", type=Path, help="image to post (default: an MNIST test digit, else a drawn one)")
    parser.add_argument("--idx-dir", type=Path, default=DEFAULT_IDX, help="MNIST IDX folder for the default digit")
    parser.add_argument("--no-inprocess", action="store_true", help="skip the in-process rows (and ratios)")
    parser.add_argument("--floor", action="store_true",
                        help="also the same cells against the service's HTTP server with nothing behind it "
                             "(rows /floor: a request's cost before the service's own work)")
    parser.add_argument("--bare", action="store_true",
                        help="also the same cells against the bare path: the service's server and app with every\n"
                             "POST answered by the least a /reconstruct can do (rows /bare: a Python service's ceiling)")
    parser.add_argument("--asgi", action="store_true",
                        help="also the same cells against the service's app called through ASGI in a subprocess, no\n"
                             "HTTP server (client asgi: what the app costs without the server)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    report = run(
        models_dir=args.models_dir,
        model=args.model,
        duration=args.duration,
        warmup=args.warmup,
        concurrency=[int(n) for n in args.concurrency.split(",") if n.strip()],
        endpoints=[e.strip().lstrip("/") for e in args.endpoints.split(",") if e.strip()],
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        url=args.url,
        png=digit_png(args.image, args.idx_dir),
        extra_batches=[int(b) for b in args.extra_batch.split(",") if b.strip()],
        api_key=args.api_key,
        extra_env=extra_env,
        inprocess=not args.no_inprocess,
        clients=[c.strip() for c in args.client.split(",") if c.strip()],
        floor=args.floor,
        asgi=args.asgi,
        bare=args.bare,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    report.command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2))
    return 1 if any(c.errors for c in report.cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
