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

On a small machine (2 cores, shared) client and server compete for the cores, and per request the httpx
client spends about as much CPU as the service's HTTP stack (uvicorn + Starlette/FastAPI routing,
dependencies, middleware, access log); at batch >= 8 the model itself is the smaller part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

ENDPOINTS = ("reconstruct", "encode")
CLIENTS = ("httpx", "raw")
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


# ---- results -----------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (endpoint, concurrency) measurement against the service."""

    endpoint: str
    concurrency: int
    seconds: float
    images: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_batch: float | None = None
    client: str = "httpx"
    client_cpu: float | None = None  # cores busy in the client process during the cell
    server_cpu: float | None = None  # cores busy in the server process (None with --url)
    error_samples: list[str] = field(default_factory=list)

    @property
    def img_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_ms_per_image(self) -> float | None:
        """Server CPU per answered image: less sensitive to other jobs on the machine than img/s."""
        if self.server_cpu is None or not self.images:
            return None
        return self.server_cpu * 1000 / self.img_s


@dataclass
class InProcess:
    """One in-process measurement: `what` at `batch`, in images per second."""

    what: str
    batch: int
    img_s: float
    ms_per_batch: float
    cpu_ms_per_image: float  # process CPU (all threads) per image: comparable to the server's srv ms/img


@dataclass
class Report:
    model: str
    version_dir: str | None
    max_batch_size: int
    max_wait_ms: float | None
    duration: float
    cpu_count: int
    payload_bytes: int
    inprocess: list[InProcess]
    cells: list[Cell]
    command: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        for cell, row in zip(self.cells, out["cells"]):
            row["img_s"] = cell.img_s
            row["server_cpu_ms_per_image"] = cell.server_cpu_ms_per_image
        out["ratios"] = ratios(self)
        return out


# ---- in-process ----------------------------------------------------------------------------------------
def _timed(step, batch: int, duration: float, min_calls: int = 3) -> tuple[float, float, float]:
    """(images/s, ms per call, CPU ms per image) of `step`, which handles `batch` images per call."""
    for _ in range(2):  # warm: first calls trace/allocate
        step()
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while calls < min_calls or time.perf_counter() - started < duration:
        step()
        calls += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return calls * batch / elapsed, elapsed / calls * 1000, cpu * 1000 / (calls * batch)


def measure_inprocess(
    version_dir: Path, png: bytes, batches: Sequence[int], duration: float, max_batch: int
) -> list[InProcess]:
    """The SavedModel called directly, as the batcher calls it (tf.constant in, .numpy() out)."""
    import tensorflow as tf

    from contract.bitstream import Bitstream
    from contract.card import ModelCard
    from contract.entropy import encode_latents, staged_scales
    from service.inference import imaging

    card = ModelCard.read(version_dir)
    module = tf.saved_model.load(str(version_dir))
    reconstruct, encode = module.signatures["reconstruct"], module.signatures["encode"]
    tables = {k: np.asarray(v.numpy(), np.float64) for k, v in module.signatures["entropy_tables"]().items()}
    tables_hash = bytes.fromhex(card.tables_sha256)[:4]
    source = imaging.read_image(png, card.input.channels, 1 << 30)
    plan = imaging.plan_size(source.height, source.width, card.input)
    one = imaging.to_model(source.pixels, plan)
    stages = {s.scale_source: list(module.signatures[s.scale_source].structured_input_signature[1])
              for s in card.latents if s.coding == "gaussian" and s.scale_source}

    def run_stage(stage: str, feed) -> dict[str, np.ndarray]:  # as LoadedModel.run
        return {k: v.numpy() for k, v in module.signatures[stage](**{k: tf.constant(v) for k, v in feed.items()}).items()}

    def scale_fn():  # one per image, as LoadedModel.scale_fn
        return staged_scales(card.latents, run_stage, stages) if stages else None

    rows: list[InProcess] = []

    def add(what: str, batch: int, step) -> None:
        rows.append(InProcess(what, batch, *_timed(step, batch, duration)))

    for batch in batches:
        images = np.stack([one] * batch)
        add("reconstruct", batch, lambda x=images: reconstruct(images=tf.constant(x))["images"].numpy())
    for batch in batches:
        images = np.stack([one] * batch)

        def encode_step(x=images) -> list[bytes]:
            latents = {k: v.numpy() for k, v in encode(images=tf.constant(x)).items()}
            streams = []
            for i in range(len(x)):
                payloads = encode_latents(card.latents, {k: v[i] for k, v in latents.items()}, tables, scale_fn())
                streams.append(Bitstream(card.name, card.version, tables_hash, plan.height, plan.width,
                                         source.channels, payloads).to_bytes())
            return streams

        add("encode+entropy", batch, encode_step)

    def with_png() -> None:  # what a request adds around the model: decode the PNG, encode the answer
        decoded = [imaging.to_model(imaging.read_image(png, card.input.channels, 1 << 30).pixels, plan)
                   for _ in range(max_batch)]
        out = reconstruct(images=tf.constant(np.stack(decoded)))["images"].numpy()
        for pixels in out:
            imaging.mse_psnr(one, pixels)
            imaging.encode_image(imaging.from_model(pixels, plan))

    add("reconstruct+png", max_batch, with_png)
    return rows


# ---- the server ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen | None
    log_path: Path | None

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server process (all its threads) so far, from /proc."""
        if self.process is None:
            return None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        """The server's last log lines, without the access lines of our own readiness polls."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if "GET /readyz" not in line][-lines:])


@contextlib.contextmanager
def start_server(
    models_dir: Path,
    model: str,
    *,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> Iterator[ServerProcess]:
    """`python -m service` in a subprocess on a free loopback port; yields once /readyz says 200."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEC_")}
    env |= {
        "AEC_MODELS_DIR": str(Path(models_dir).resolve()),
        "AEC_DEFAULT_MODEL": model,
        "AEC_HOST": "127.0.0.1",
        "AEC_PORT": str(port),
        "AEC_RELOAD_INTERVAL_S": "0",  # nothing changes under a benchmark; no poller on the loop
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    if max_batch_size is not None:
        env["AEC_MAX_BATCH_SIZE"] = str(max_batch_size)
    if max_wait_ms is not None:
        env["AEC_MAX_WAIT_MS"] = str(max_wait_ms)
    env |= extra_env or {}
    fd, log_name = tempfile.mkstemp(prefix="bench-serve-", suffix=".log")
    with open(fd, "wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, Path(log_name))
    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2) as client:
            answer = "no answer"
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get(f"{server.url}/readyz")
                    if response.status_code == 200:
                        break
                    answer = f"{response.status_code} {response.text[:300]}"
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the server was not ready after {timeout:.0f}s (last /readyz: {answer}):\n{server.log_tail()}"
                    )
                time.sleep(0.25)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        Path(log_name).unlink(missing_ok=True)


# ---- the client ----------------------------------------------------------------------------------------
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
    latencies: list[float] = []
    errors: list[str] = []
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
        start = time.perf_counter()
        window_start, stop = start + warmup, start + warmup + duration
        before_batches = before_cpu = None

        async def worker(send) -> None:
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

        async def snapshot_at_window_start() -> None:
            nonlocal before_batches, before_cpu
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            before_cpu = (time.process_time(), server.cpu_seconds() if server else None, time.perf_counter())
            before_batches = await batch_totals(probe, url, model or "", signature) if model else None

        await asyncio.gather(snapshot_at_window_start(), *(worker(send) for send in senders))
        ended = time.perf_counter()
        after_server_cpu = server.cpu_seconds() if server else None
        after_client_cpu = time.process_time()
        after_batches = await batch_totals(probe, url, model or "", signature) if model else None

    cell = Cell(endpoint, concurrency, duration, len(latencies), len(errors), *_percentiles(latencies), client=client)
    cell.error_samples = sorted(set(errors))[:3]
    if before_batches and after_batches and after_batches[1] > before_batches[1]:
        cell.mean_batch = (after_batches[0] - before_batches[0]) / (after_batches[1] - before_batches[1])
    if before_cpu is not None:
        wall = ended - before_cpu[2]  # the window plus the drain of the last requests
        cell.client_cpu = (after_client_cpu - before_cpu[0]) / wall
        if before_cpu[1] is not None and after_server_cpu is not None:
            cell.server_cpu = (after_server_cpu - before_cpu[1]) / wall
    return cell


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    ms = np.asarray(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


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

    if url:
        asyncio.run(all_cells(ServerProcess(url.rstrip("/"), None, None)))
    else:
        log(f"starting python -m service (AEC_MAX_BATCH_SIZE={batch_size}, AEC_MAX_WAIT_MS={wait_ms:g})")
        with start_server(models_dir, model, max_batch_size=batch_size, max_wait_ms=wait_ms,
                          extra_env=extra_env) as server:
            asyncio.run(all_cells(server))
    return Report(model, str(version_dir) if version_dir else None, batch_size, wait_ms, duration,
                  os.cpu_count() or 0, len(png), rows, cells)


def ratios(report: Report) -> list[dict]:
    """service img/s over in-process img/s of the same kind: batch 1, the batcher's max batch, the best."""
    out = []
    kinds = {"reconstruct": "reconstruct", "encode": "encode+entropy"}
    for cell in report.cells:
        rows = [r for r in report.inprocess if r.what == kinds[cell.endpoint]]
        if not rows:
            continue
        refs = {f"b{r.batch}": r.img_s for r in rows}
        out.append({"endpoint": cell.endpoint, "concurrency": cell.concurrency, "client": cell.client,
                    **{ref: cell.img_s / v for ref, v in refs.items() if v > 0}})
    return out


def format_report(report: Report) -> str:
    header = (
        f"model {report.model} ({report.version_dir or 'remote'}), payload PNG {report.payload_bytes} B, "
        f"server max_batch_size={report.max_batch_size} max_wait_ms={report.max_wait_ms}, "
        f"{report.duration:g} s per cell, {report.cpu_count} CPU cores (client and server share them)"
    )
    columns = (
        f"{'endpoint':<13} {'client':<6} {'conc':>5} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'batch':>6} {'cpu cli':>7} {'cpu srv':>7} {'srv ms/img':>10}"
    )
    lines = [header, "", columns]

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for c in report.cells:
        lines.append(
            f"/{c.endpoint:<12} {c.client:<6} {c.concurrency:>5} {c.img_s:>9.1f} {c.p50_ms:>8.2f} {c.p99_ms:>8.2f} {c.errors:>6} "
            f"{fmt(c.mean_batch, '.1f'):>6} {fmt(c.client_cpu, '.2f'):>7} {fmt(c.server_cpu, '.2f'):>7} "
            f"{fmt(c.server_cpu_ms_per_image, '.2f'):>10}"
        )
    if report.inprocess:
        lines += ["", f"{'in-process':<17} {'batch':>5} {'img/s':>9} {'ms/batch':>9} {'cpu ms/img':>10}"]
        for r in report.inprocess:
            lines.append(f"{r.what:<17} {r.batch:>5} {r.img_s:>9.1f} {r.ms_per_batch:>9.2f} {r.cpu_ms_per_image:>10.2f}")
        lines.append("")
        for ratio in ratios(report):
            refs = "  ".join(f"{k}: {v:.2f}" for k, v in ratio.items() if k.startswith("b"))
            lines.append(f"service/in-process  /{ratio['endpoint']:<12} {ratio['client']:<6} c={ratio['concurrency']:<3} {refs}")
    for c in report.cells:
        for sample in c.error_samples:
            lines.append(f"error sample /{c.endpoint} {c.client} c={c.concurrency}: {sample}")
    return "\n".join(lines)


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
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    report.command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2))
    return 1 if any(c.errors for c in report.cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
