"""Photos through the service: MP/s and latency of `/encode`, `/decode`, `/reconstruct` over HTTP, next to
the same code path in-process, in one run; and where a megapixel's time goes.

    python bench/photos.py                                   # natural, 0.4 and 3 MP, concurrency 1,4,16
    python bench/photos.py --sizes 0.4 --concurrency 1,4 --duration 10 --json out.json

1. In-process: a ModelRegistry built from the service's own Settings (same batcher, executor, thread
   budget, malloc setting and TensorFlow CPU pool) and the functions the routes call:
   `imaging.open_image`/`decode_image` → `codec.encode` → the stream; `codec.parse` → `codec.decode` →
   `imaging.encode_image` (PNG); upload → `codec.reconstruct` → PNG. N closed-loop asyncio workers, as N
   clients would be.
2. The service: `python -m service` in a subprocess (bench/launcher.py) with the same settings; N
   closed-loop workers, one keep-alive connection each, posting the photo (or its stream, for /decode):
   httpx (`--client httpx`, default) or bench/serve.py's minimal HTTP/1.1 client (`--client raw`), which
   leaves the server more of the shared cores (httpx parses and copies a 3 MP photo's 4.5 MB upload and
   its PNG answer in Python, on the same two cores the server has).
3. Per megapixel, one image at a time in-process: upload decode, analysis transform (the `encode`
   signature), parameter stages and range coding (the coding loop; the stages' TF calls timed apart),
   synthesis (the `decode` signature) and PNG encoding.

Photos are `--image` (default: the first McMaster photo from the shared datasets) resized with Lanczos
to each size's pixel count at the photo's aspect ratio; the stream for /decode is the encode of that photo.
The machine's other load moves every figure; the ratio lines compare cells measured minutes apart at most.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages importable
    sys.path.insert(0, str(ROOT))
from service.process_env import configure_tensorflow_env

configure_tensorflow_env()  # as `python -m service` starts TensorFlow: quiet, its CPU pool

from PIL import Image

from bench.servelib.client import RawHTTP, percentiles

ENDPOINTS = ("encode", "decode", "reconstruct")
DEFAULT_IMAGE = ROOT.parent / "shared" / "datasets" / "natural" / "McMaster"


@dataclass
class Row:
    """One (where, endpoint, size, concurrency) measurement."""

    where: str  # "in-process" or "service"
    endpoint: str
    megapixels: float
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def mp_s(self) -> float:
        return self.requests * self.megapixels / self.seconds if self.seconds else 0.0


def resized_photo(image: Image.Image, megapixels: float) -> Image.Image:
    """`image` resized with Lanczos to about `megapixels` MP at its aspect ratio."""
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def photo_png(source: Path, megapixels: float) -> bytes:
    """`source` (a file, or the first image of a folder) resized to about `megapixels` MP, as PNG."""
    if source.is_dir():
        source = min(p for p in source.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    image = resized_photo(Image.open(source).convert("RGB"), megapixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def min_completions(concurrency: int) -> int:
    """Completions a cell waits for past its duration: enough that every worker finished twice."""
    return 2 * concurrency + 1


async def closed_loop(send, concurrency: int, duration: float, warmup: float) -> tuple[int, int, list[float], float]:
    """`concurrency` workers each awaiting `send()` again as soon as it returns True (False: an error).

    One round of `concurrency` requests first, unmeasured: a fresh server traces each new input shape.
    Then `warmup` seconds unmeasured, then the measured window: from the first completion after the
    warmup to the last one, and it lasts at least `duration` seconds AND `min_completions` completions
    (a 3 MP photo takes seconds: an 8 s window of a fixed length counted one request or none). Returns
    (completions counted, errors, their latencies, the window's seconds): the throughput is
    completions / seconds, the rate between completions, which holds for any request length."""
    await asyncio.gather(*(send() for _ in range(concurrency)), return_exceptions=True)
    start = time.perf_counter()
    window, stop = start + warmup, start + warmup + duration
    latencies: list[float] = []
    completions: list[float] = []  # measured completion times; the first only opens the window
    errors = 0
    needed = min_completions(concurrency) + 1

    def more() -> bool:
        return time.perf_counter() < stop or len(completions) < needed

    async def worker() -> None:
        nonlocal errors
        while more():
            sent = time.perf_counter()
            try:
                ok = await send()
            except Exception:  # noqa: BLE001 -- every failure is an error of the cell
                ok = False
            done = time.perf_counter()
            if not ok:
                errors += 1
                if errors > 100 and not completions:
                    return
            elif done >= window:
                completions.append(done)
                if len(completions) > 1:
                    latencies.append(done - sent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if len(completions) < 2:
        return 0, errors, latencies, 0.0
    return len(completions) - 1, errors, latencies, completions[-1] - completions[0]


# ---- in-process ----------------------------------------------------------------------------------------
async def inprocess(model_name: str, payloads: dict[float, bytes], quality: float, concurrencies: list[int],
                    duration: float, warmup: float, split_png: bytes) -> tuple[dict[str, float], dict[float, bytes],
                                                                                list[Row]]:
    """The time split, the /decode streams and the in-process rows, from ONE registry built as the service
    builds it: the TF thread budget is set before anything initialises TensorFlow, so these rows run under
    the server's configuration."""
    from concurrent.futures import ThreadPoolExecutor

    from service.app.config import Settings
    from service.app.server import tune_allocator
    from service.inference import codec, imaging
    from service.inference.registry import ModelRegistry, configure_tensorflow, serves_any_size

    tune_allocator()  # the server's malloc setting, as `python -m service` makes it
    settings = Settings(_env_file=None, models_dir=ROOT / "models_store", default_model=model_name)
    configure_tensorflow(settings.intra_op_threads(serves_any_size(settings.models_dir)))
    executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
    registry = ModelRegistry(settings.models_dir, default_model=model_name, max_batch_size=settings.max_batch_size,
                             max_wait_s=settings.max_wait_ms / 1000.0, max_queue=settings.max_queue,
                             max_in_flight=settings.batches_in_flight, executor=executor)
    await registry.refresh()
    model = registry.resolve(model_name)
    rows: list[Row] = []

    def sender(endpoint: str, body: bytes):
        async def encode() -> bool:
            source = imaging.decode_image(imaging.open_image(body, settings.max_pixels), model.card.input.channels)
            return bool((await codec.encode(model, source, settings.tiling, quality)).stream)

        async def decode() -> bool:
            pixels, _ = await codec.decode(model, codec.parse(body), settings.max_pixels, settings.tiling)
            return bool(await asyncio.to_thread(imaging.encode_image, pixels))

        async def reconstruct() -> bool:
            source = imaging.decode_image(imaging.open_image(body, settings.max_pixels), model.card.input.channels)
            result = await codec.reconstruct(model, source, settings.tiling, quality)
            return bool(await asyncio.to_thread(imaging.encode_image, result.pixels))

        return {"encode": encode, "decode": decode, "reconstruct": reconstruct}[endpoint]

    try:
        split = time_split(model, split_png, quality)
        _print_split(split, quality)
        streams = {}
        for mp, png in payloads.items():  # the /decode payloads: each photo's stream
            source = imaging.decode_image(imaging.open_image(png, settings.max_pixels), model.card.input.channels)
            streams[mp] = (await codec.encode(model, source, settings.tiling, quality)).stream
        print(HEADER)
        for mp, png in payloads.items():
            for endpoint in ENDPOINTS:
                body = streams[mp] if endpoint == "decode" else png
                for c in concurrencies:
                    n, errors, latencies, seconds = await closed_loop(sender(endpoint, body), c, duration, warmup)
                    rows.append(Row("in-process", endpoint, mp, c, n, errors, seconds, *percentiles(latencies)))
                    print(_format(rows[-1]), flush=True)
    finally:
        await registry.close()
        executor.shutdown(wait=True)
    return split, streams, rows


# ---- the service -----------------------------------------------------------------------------------------
async def service_rows(url: str, model_name: str, payloads: dict[float, bytes], streams: dict[float, bytes],
                       quality: float, concurrencies: list[int], duration: float, warmup: float,
                       client: str = "httpx") -> list[Row]:
    rows = []
    for mp, png in payloads.items():
        for endpoint in ENDPOINTS:
            body = streams[mp] if endpoint == "decode" else png
            kind = "application/octet-stream" if endpoint == "decode" else "image/png"
            params = {"model": model_name} | ({} if endpoint == "decode" else {"quality": quality})
            for c in concurrencies:
                clients, send = _workers(client, url, c, f"/{endpoint}", body, params, kind)
                try:
                    n, errors, latencies, seconds = await closed_loop(send, c, duration, warmup)
                finally:
                    await asyncio.gather(*(one.close() if client == "raw" else one.aclose() for one in clients))
                rows.append(Row("service", endpoint, mp, c, n, errors, seconds, *percentiles(latencies)))
                print(_format(rows[-1]), flush=True)
    return rows


def _workers(client: str, url: str, count: int, path: str, body: bytes, params: dict, kind: str):
    """`count` keep-alive clients of kind `client` and the closed loop's send() over them."""
    if client == "raw":
        clients = [RawHTTP(url) for _ in range(count)]
        query = f"{path}?{urllib.parse.urlencode(params)}"
        request = clients[0].request(query, body, {"Content-Type": kind})  # the same bytes for every worker
        return clients, _pooled(list(clients), lambda one: one.send(request))
    import httpx

    clients = [httpx.AsyncClient(base_url=url, timeout=300, trust_env=False) for _ in range(count)]
    return clients, _pooled(list(clients), lambda one: _status(
        one.post(path, content=body, params=params, headers={"Content-Type": kind})))


async def _status(response) -> tuple[int, bytes]:
    """httpx's answer as RawHTTP.send gives it: (status, body)."""
    r = await response
    return r.status_code, r.content


def _pooled(free: list, post):
    """send(): `post(client)` on a free client (one keep-alive connection per worker); True on a 200."""

    async def send() -> bool:
        client = free.pop()
        try:
            status, _ = await post(client)
            return status == 200
        finally:
            free.append(client)

    return send


# ---- where a megapixel's time goes -------------------------------------------------------------------
def time_split(model, png: bytes, quality: float, repeats: int = 3) -> dict[str, float]:
    """Seconds per megapixel of each step for one photo, sequentially (best of `repeats`); stages and
    signatures called directly (`LoadedModel.run`), so each step is timed alone."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, seconds in _one_split(model, png, quality).items():
            best[name] = min(best.get(name, float("inf")), seconds)
    best["range coding (without stages)"] = (best["range coding + stages"] + best["range decoding + stages"]
                                             - best["parameter stages (TF)"])
    return best


def _one_split(model, png: bytes, quality: float) -> dict[str, float]:
    from contract.entropy import decoding_steps, drive, encoding_steps
    from service.inference import codec, imaging

    times: dict[str, float] = {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    def staged(scale_fn):
        return lambda name, coded: timed("parameter stages (TF)", scale_fn, name, coded)

    source = timed("upload decode", lambda: imaging.decode_image(imaging.open_image(png, 1 << 30), 3))
    plan = imaging.plan_size(source.height, source.width, model.card.input)
    extra = {k: v[None] for k, v in codec.quality_input(codec.model_quality(model, quality)).items()}
    seen = imaging.model_input(source, plan, 3)[None]
    latents = timed("analysis (encode signature)", model.run, "encode", {"images": seen, **extra})
    one = {k: v[0] for k, v in latents.items()}
    payloads = timed("range coding + stages", drive, encoding_steps(model.card.latents, one, model.tables),
                     staged(model.scale_fn()))
    decoded = timed("range decoding + stages", drive, decoding_steps(model.card.latents, payloads, model.tables),
                    staged(model.scale_fn()))
    images = timed("synthesis (decode signature)", model.run, "decode", {**decoded, **extra})["images"][0]
    timed("PNG encode", imaging.encode_image, imaging.output_image(images, plan, 3))
    mp = source.height * source.width / 1e6
    return {name: seconds / mp for name, seconds in times.items()}


HEADER = ("\n| where | endpoint | MP | concurrency | MP/s | p50 ms | p99 ms | errors |\n"
          "|---|---|---|---|---|---|---|---|")


def _print_split(split: dict[str, float], quality: float) -> None:
    print(f"\nseconds per megapixel, quality {quality:g}, one image at a time:\n| step | s/MP |\n|---|---|")
    for name, value in split.items():
        print(f"| {name} | {value:.3f} |")


def _format(row: Row) -> str:
    return (f"| {row.where} | /{row.endpoint} | {row.megapixels:g} | {row.concurrency} | {row.mp_s:.3f} | "
            f"{row.p50_ms:.0f} | {row.p99_ms:.0f} | {row.errors} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="natural", help="a variable-rate codec in models_store (default %(default)s)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a photo, or a folder (its first image)")
    parser.add_argument("--sizes", default="0.4,3", help="megapixels, comma-separated (default %(default)s)")
    parser.add_argument("--concurrency", default="1,4,16", help="closed-loop workers per cell (default %(default)s)")
    parser.add_argument("--quality", type=float, default=5.0, help="?quality= of /encode and /reconstruct")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first, per cell")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx",
                        help="the service rows' load generator (raw: bench/serve.py's minimal HTTP/1.1 client)")
    parser.add_argument("--skip-service", action="store_true", help="in-process rows and the time split only")
    parser.add_argument("--json", type=Path, help="write every row and the split here")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    payloads = {mp: photo_png(args.image, mp) for mp in sizes}

    split, streams, rows = asyncio.run(inprocess(args.model, payloads, args.quality, concurrencies, args.duration,
                                                 args.warmup, payloads[sizes[0]]))
    if not args.skip_service:
        from bench.launcher import server_process

        with server_process(models_dir=ROOT / "models_store", default_model=args.model, log_level="WARNING") as server:
            rows += asyncio.run(service_rows(server.url, args.model, payloads, streams, args.quality, concurrencies,
                                             args.duration, args.warmup, args.client))
        print("\nservice MP/s / in-process MP/s:")
        for row in (r for r in rows if r.where == "service"):
            ref = next(r for r in rows if r.where == "in-process" and (r.endpoint, r.megapixels, r.concurrency)
                       == (row.endpoint, row.megapixels, row.concurrency))
            print(f"  /{row.endpoint} {row.megapixels:g} MP c={row.concurrency}: "
                  f"{row.mp_s / ref.mp_s if ref.mp_s else float('nan'):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"split_s_per_mp": split, "rows": [asdict(r) | {"mp_s": r.mp_s} for r in rows]},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
