"""Sustained mixed load on all four endpoints, with every answer checked against its request.

    python bench/load.py                                  # own server on models_store, 120 s at 64
    python bench/load.py --url http://127.0.0.1:8000 --model mnist --duration 300 --concurrency 128
    python bench/load.py --models-dir /tmp/store --model tiny --duration 5 --concurrency 16
    python bench/load.py --hostile 0.1                    # 10% of requests are attacks (issue 18's classes)

An asyncio httpx driver, bounded in time (--duration, then in-flight requests finish) and optionally in
count (--max-requests), on loopback only. Before the load it records a reference answer per image,
one request at a time; under load every answer is compared with its image's reference, so a response
delivered to the wrong request (or a batch slice handed to the wrong caller) shows up as a mismatch:

- /encode: the stream's header names this image's size, and its bytes equal the reference stream;
- /decode of the latest stream /encode returned for image i equals /reconstruct of image i (±1 level);
- /reconstruct of image i equals its reference (±1 level) at image i's size;
- /anomaly-score of image i equals its reference score (relative 1e-5: batch composition may move the
  last float bits, never more).

With `--hostile F`, a fraction F of the requests are attacks instead, each with the one answer it must
get (anything else is a mismatch): 64 zlib-bomb PNGs in one multipart (413), one 4096² bomb (200: within
every limit, so it must be served, a few at a time), eight forged streams claiming 4096² (413), a
stream of the shipped `natural` codec claiming 4096² with empty payloads (400, when that model is
served), a float TIFF with NaN pixels (400), a 1 MB request header (431), a truncated JPEG (400), a PNG
with a zTXt bomb (413), a full-width digit in ?version= (422) and a path forging a log line (404).
Each kind has its own row; RSS at start and end shows whether they left memory behind.

Images are synthetic, of mixed sizes (as the model's size policy allows) and grey or colour. The table
gives requests, errors (any non-200, transport failures included), 5xx, mismatches, p50/p99 latency
per endpoint, and the server's RSS at start and end (from its /metrics). Exit status 1 when any 5xx,
transport failure or mismatch happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contract.bitstream import Bitstream, BitstreamError

ENDPOINTS = ("/encode", "/decode", "/reconstruct", "/anomaly-score")
PIXEL_TOLERANCE = 1  # uint8 levels: a reconstruction is the same image, give or take float rounding
SCORE_RTOL = 1e-5
MiB = 1024 * 1024


# ---- test images ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestImage:
    index: int
    png: bytes
    width: int
    height: int
    channels: int


def _pattern(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """Smooth blobs on black, distinct per seed: varied enough that no two images are alike."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros((height, width, channels), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        sigma = rng.uniform(0.08, 0.16) * min(height, width)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        out = np.maximum(out, blob[..., None] * rng.uniform(0.5, 1.0, size=channels).astype(np.float32))
    return np.clip(out, 0.0, 1.0)


def sizes_for(spec: dict) -> list[tuple[int, int]]:
    """Sizes the model's policy accepts: any size (pad), resize from anything, or its own size only."""
    if spec.get("any_size"):
        return [(32, 32), (48, 64), (64, 40), (96, 96), (33, 57), (128, 80)]
    h, w = int(spec["height"]), int(spec["width"])
    if spec.get("size_policy") == "resize":
        return [(h, w), (h, w), (h + 5, w + 3), (2 * h, 2 * w), (max(8, h // 2), w), (h, 3 * w // 2)]
    if spec.get("size_policy") == "pad":
        return [(h, w), (h, w), (max(4, h - 3), max(4, w - 5)), (max(4, h // 2), max(4, w // 2))]
    return [(h, w)]


def make_images(spec: dict, count: int, seed: int) -> list[TestImage]:
    rng = np.random.default_rng(seed)
    sizes = sizes_for(spec)
    images = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        channels = int(spec.get("channels", 1)) if i % 3 else (3 if spec.get("channels", 1) == 1 else 1)
        pixels = np.rint(_pattern(rng, height, width, channels) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
        images.append(TestImage(i, buffer.getvalue(), width, height, channels))
    return images


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


# ---- references and checks ----------------------------------------------------------------------
@dataclass
class Reference:
    stream: bytes
    recon: np.ndarray  # uint8 levels (as int16) of /reconstruct
    score: float | None  # None when the model has no calibrated threshold
    decode_vs_recon: int  # max level difference of decode(encode(x)) vs reconstruct(x)


class Checker:
    """Compares an answer with the reference of the image it was asked about; returns why not, or None."""

    def __init__(self, images: Sequence[TestImage], references: Sequence[Reference]) -> None:
        self.images, self.references = images, references
        self.max_score_deviation = 0.0
        self.max_level_deviation = 0

    def encode(self, i: int, response: httpx.Response) -> str | None:
        image, ref = self.images[i], self.references[i]
        try:
            header = Bitstream.from_bytes(response.content)
        except BitstreamError as exc:
            return f"encode[{i}]: not a bitstream ({exc})"
        if (header.width, header.height, header.channels) != (image.width, image.height, image.channels):
            return f"encode[{i}]: stream is for a {header.width}x{header.height}x{header.channels} image"
        if response.content != ref.stream:
            return f"encode[{i}]: stream differs from the reference ({len(response.content)} vs {len(ref.stream)} B)"
        return None

    def image(self, what: str, i: int, response: httpx.Response) -> str | None:
        image, ref = self.images[i], self.references[i]
        try:
            pixels = _pixels(response.content)
        except OSError as exc:
            return f"{what}[{i}]: not an image ({exc})"
        if pixels.shape != ref.recon.shape:
            return f"{what}[{i}]: shape {pixels.shape}, expected {ref.recon.shape} ({image.width}x{image.height})"
        deviation = int(np.abs(pixels - ref.recon).max())
        self.max_level_deviation = max(self.max_level_deviation, deviation)
        if deviation > PIXEL_TOLERANCE:
            return f"{what}[{i}]: differs from image {i}'s reconstruction by up to {deviation} levels"
        return None

    def score(self, i: int, response: httpx.Response) -> str | None:
        ref = self.references[i]
        body = response.json()
        if (body.get("width"), body.get("height")) != (self.images[i].width, self.images[i].height):
            return f"anomaly-score[{i}]: answer is about a {body.get('width')}x{body.get('height')} image"
        assert ref.score is not None
        deviation = abs(body["score"] - ref.score) / max(abs(ref.score), 1e-12)
        self.max_score_deviation = max(self.max_score_deviation, deviation)
        if deviation > SCORE_RTOL:
            return f"anomaly-score[{i}]: {body['score']!r} vs reference {ref.score!r}"
        return None


# ---- hostile requests (--hostile) ------------------------------------------------------------------
BIG = 4096  # the default AEC_MAX_PIXELS is BIG * BIG


def png_bomb(side: int) -> bytes:
    """A valid grey PNG of side x side zeros in a few KB (side² bytes once inflated)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(b"\x00" * (side + 1)) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _multipart(parts: Sequence[bytes], kind: str) -> tuple[bytes, str]:
    boundary = "hostile-boundary-7f3a"
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f{i}\"\r\n"
                    f"Content-Type: {kind}\r\n\r\n".encode() + part + b"\r\n" for i, part in enumerate(parts))
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Attack:
    """One kind of hostile request and the only answer it may get."""

    name: str
    method: str
    path: str
    body: bytes
    content_type: str
    expect: int  # the status (503 is always allowed: backpressure)
    code: str | None = None  # the error code, for 4xx
    raw_head: bytes | None = None  # sent over a plain socket instead (a header httpx would not send)


def make_attacks(stream: bytes, query: str, natural: tuple[bytes, int] | None) -> list[Attack]:
    """The attacks, built once. `stream`: a real stream of the loaded model, `query` the `?model=...`
    that names it; `natural`: a stream of the shipped natural codec and the (padded) height of the image
    it codes (None when that model is not served)."""
    header = Bitstream.from_bytes(stream)
    forged = Bitstream(header.model, header.version, header.tables_hash, BIG, BIG, 3, header.latents,
                       header.quality_hundredths).to_bytes()
    bomb = png_bomb(BIG)
    nan = np.full((28, 28), 0.5, np.float32)
    nan[3, 4] = np.nan
    tiff = io.BytesIO()
    Image.fromarray(nan, mode="F").save(tiff, format="TIFF")
    jpeg = io.BytesIO()
    ramp = np.linspace(0, 255, 512, dtype=np.float32)
    Image.fromarray(np.add.outer(ramp, ramp).astype(np.uint8) // 2).save(jpeg, format="JPEG", quality=90)
    grey = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(grey, format="PNG")
    ztxt = zlib.compress(b"\x00" * (4 * MiB), 9)
    ztxt_chunk = struct.pack(">I", len(ztxt) + 9) + b"zTXt" + b"comment\x00\x00" + ztxt
    ztxt_chunk += struct.pack(">I", zlib.crc32(b"zTXt" + b"comment\x00\x00" + ztxt))
    png_ztxt = grey.getvalue()[:33] + ztxt_chunk + grey.getvalue()[33:]
    bombs, bombs_type = _multipart([bomb] * 64, "image/png")
    streams, streams_type = _multipart([forged] * 8, "application/octet-stream")
    forged_log = "/x%0a2026-12-01%2008:00:00,000%20INFO%20service.access%20[-]%20GET%20/admin%20200"
    attacks = [
        Attack("bombs-64", "POST", f"/anomaly-score?{query}", bombs, bombs_type, 413, "too_many_pixels"),
        Attack("bomb-4096", "POST", f"/anomaly-score?{query}", bomb, "image/png", 200),
        Attack("streams-4096x8", "POST", "/decode", streams, streams_type, 413, "too_many_pixels"),
        Attack("nan-tiff", "POST", f"/reconstruct?{query}", tiff.getvalue(), "image/tiff", 400, "non_finite_pixels"),
        Attack("header-1MB", "GET", "/healthz", b"", "", 431, "headers_too_large",
               raw_head=b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bomb: " + b"a" * MiB + b"\r\n\r\n"),
        Attack("jpeg-cut", "POST", f"/encode?{query}", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "image/jpeg",
               400, "corrupt_image"),
        Attack("ztxt-bomb", "POST", f"/encode?{query}", png_ztxt, "image/png", 413, "image_metadata_too_large"),
        Attack("fullwidth-version", "POST", f"/encode?{query.split('&')[0]}&version=%EF%BC%91", grey.getvalue(),
               "image/png", 422, "invalid_request"),
        Attack("log-forgery", "GET", forged_log, b"", "", 404, "not_found"),
    ]
    if natural is not None:
        nat, padded = Bitstream.from_bytes(natural[0]), natural[1]
        # latent shapes a 4096² image has (each latent's stride from the real stream), every payload empty
        empty = [((BIG // (padded // shape[0]), BIG // (padded // shape[1]), shape[-1]), b"") for shape, _ in nat.latents]
        claim = Bitstream(nat.model, nat.version, nat.tables_hash, BIG, BIG, 3, empty, nat.quality_hundredths)
        attacks.append(Attack("natural-empty-4096", "POST", "/decode", claim.to_bytes(), "application/octet-stream",
                              400, "corrupt_bitstream"))
    return attacks


async def _raw_exchange(url: str, head: bytes, timeout: float) -> tuple[int, bytes]:
    """Send `head` over a plain connection, stopping as soon as the server answers; (status, body)."""
    target = httpx.URL(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port), timeout)
    try:
        async def send() -> None:
            for start in range(0, len(head), 64 * 1024):
                writer.write(head[start : start + 64 * 1024])
                await writer.drain()

        sender = asyncio.create_task(send())
        data = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(timeout):
                while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    data += chunk
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


def judge(attack: Attack, status: int, body: bytes) -> str | None:
    """Why this answer is wrong for this attack, or None (503 overloaded is backpressure, never wrong)."""
    if status == 503:
        return None
    if status != attack.expect:
        return f"{attack.name}: HTTP {status}, expected {attack.expect} ({body[:160]!r})"
    if attack.code is not None:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return f"{attack.name}: not the JSON error shape ({body[:160]!r})"
        if code != attack.code:
            return f"{attack.name}: error code {code!r}, expected {attack.code!r}"
    return None


# ---- the report -------------------------------------------------------------------------------------
@dataclass
class EndpointStats:
    requests: int = 0
    errors: int = 0
    server_errors: int = 0
    overloaded: int = 0
    transport: int = 0
    mismatches: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class Report:
    url: str
    model: str
    concurrency: int
    duration_s: float = 0.0
    stats: dict[str, EndpointStats] = field(default_factory=dict)
    rss_start: int | None = None
    rss_end: int | None = None
    rss_max: int | None = None
    first_problems: list[str] = field(default_factory=list)
    max_score_deviation: float = 0.0
    max_level_deviation: int = 0
    reference_decode_vs_recon: int = 0
    images: int = 0
    sizes: list[str] = field(default_factory=list)

    @property
    def total(self) -> EndpointStats:
        total = EndpointStats()
        for s in self.stats.values():
            total.requests += s.requests
            total.errors += s.errors
            total.server_errors += s.server_errors
            total.overloaded += s.overloaded
            total.transport += s.transport
            total.mismatches += s.mismatches
            total.latencies_ms += s.latencies_ms
        return total

    @property
    def ok(self) -> bool:
        """No 5xx but backpressure's 503, no transport failure, no mismatch, and some requests made."""
        total = self.total
        return (total.requests > 0 and total.server_errors == total.overloaded and total.transport == 0
                and total.mismatches == 0 and self.reference_decode_vs_recon <= PIXEL_TOLERANCE)

    def table(self) -> str:
        header = (f"{'endpoint':<22}{'requests':>9}{'errors':>8}{'5xx':>6}{'503':>6}{'mismatch':>10}"
                  f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}")
        rows = [header]
        for name, s in [*self.stats.items(), ("total", self.total)]:
            rate = s.requests / self.duration_s if self.duration_s else 0.0
            rows.append(f"{name:<22}{s.requests:>9}{s.errors:>8}{s.server_errors:>6}{s.overloaded:>6}{s.mismatches:>10}"
                        f"{s.percentile(50):>9.1f}{s.percentile(99):>9.1f}{rate:>8.1f}")
        rss = " ".join(f"{label} {value / MiB:.1f} MiB" for label, value in
                       (("start", self.rss_start), ("end", self.rss_end), ("max", self.rss_max)) if value is not None)
        rows.append(f"server RSS: {rss or 'unknown (no process_resident_memory_bytes in /metrics)'}")
        rows.append(f"{self.duration_s:.1f} s at concurrency {self.concurrency} on {self.url} model {self.model}; "
                    f"{self.images} images ({', '.join(self.sizes)}); largest deviations: score {self.max_score_deviation:.1e} "
                    f"relative, pixels {self.max_level_deviation} level(s)")
        rows.extend(f"  problem: {p}" for p in self.first_problems)
        return "\n".join(rows)

    def to_json(self) -> dict:
        data = asdict(self)
        for name, s in self.stats.items():
            data["stats"][name] = {k: v for k, v in asdict(s).items() if k != "latencies_ms"} | {
                "p50_ms": s.percentile(50), "p99_ms": s.percentile(99)}
        data["ok"] = self.ok
        return data


# ---- the driver ---------------------------------------------------------------------------------------
async def _rss(client: httpx.AsyncClient) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        text = (await client.get("/metrics")).text
        match = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.MULTILINE)
        return int(float(match.group(1))) if match else None
    return None


async def _references(client: httpx.AsyncClient, images: Sequence[TestImage], params: dict, calibrated: bool
                      ) -> list[Reference]:
    refs = []
    for image in images:
        encoded = await client.post("/encode", params=params, content=image.png)
        encoded.raise_for_status()
        decoded = await client.post("/decode", content=encoded.content)
        decoded.raise_for_status()
        recon = await client.post("/reconstruct", params=params, content=image.png)
        recon.raise_for_status()
        score = None
        if calibrated:
            scored = await client.post("/anomaly-score", params=params, content=image.png)
            scored.raise_for_status()
            score = float(scored.json()["score"])
        recon_px = _pixels(recon.content)
        refs.append(Reference(encoded.content, recon_px, score,
                              int(np.abs(_pixels(decoded.content) - recon_px).max())))
    return refs


async def run_load(
    url: str,
    *,
    model: str | None = None,
    duration: float = 120.0,
    concurrency: int = 64,
    max_requests: int = 0,
    n_images: int = 12,
    seed: int = 0,
    api_key: str | None = None,
    timeout: float = 60.0,
    hostile: float = 0.0,
) -> Report:
    """Drive the server at `url`; `max_requests` > 0 also caps the count; `hostile` is the fraction of
    requests that are attacks (`make_attacks`). Loopback URLs only."""
    host = httpx.URL(url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"refusing to load {url}: this driver only targets loopback servers")
    headers = {"X-API-Key": api_key} if api_key else {}
    # Idle connections are dropped before the server's keep-alive timeout (uvicorn's 5 s): with equal
    # timeouts a request reused a connection the server was closing that instant (a ReadError).
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers, limits=limits) as client:
        listing = (await client.get("/models")).raise_for_status().json()
        name = model or listing["default_model"] or listing["models"][0]["name"]
        detail = (await client.get(f"/models/{name}")).raise_for_status().json()
        version = detail["default_version"]
        info = next(v for v in detail["versions"] if v["version"] == version)
        calibrated = info.get("anomaly_threshold") is not None
        params = {"model": name, "version": str(version)}
        images = make_images(info["input"], n_images, seed)
        references = await _references(client, images, params, calibrated)
        checker = Checker(images, references)
        endpoints = [e for e in ENDPOINTS if calibrated or e != "/anomaly-score"]
        report = Report(url, f"{name} v{version}", concurrency, images=len(images),
                        sizes=sorted({f"{i.width}x{i.height}x{i.channels}" for i in images}),
                        stats={e: EndpointStats() for e in endpoints},
                        reference_decode_vs_recon=max(r.decode_vs_recon for r in references))
        if report.reference_decode_vs_recon > PIXEL_TOLERANCE:
            report.first_problems.append(
                f"reference: decode(encode(x)) differs from reconstruct(x) by {report.reference_decode_vs_recon} levels")
        latest = {i: ref.stream for i, ref in enumerate(references)}
        attacks: list[Attack] = []
        if hostile > 0:
            natural = None
            if any(m["name"] == "natural" for m in listing["models"]):
                sample = make_images({"any_size": True}, 1, seed)[0]  # 32x32: pads to one 64-px cell
                coded = await client.post("/encode", params={"model": "natural"}, content=sample.png)
                natural = (coded.raise_for_status().content, 64)
            attacks = make_attacks(references[0].stream, f"model={name}&version={version}", natural)
            for attack in attacks:
                report.stats[f"! {attack.name}"] = EndpointStats()
        report.rss_start = report.rss_max = await _rss(client)
        rng = random.Random(seed)
        issued = 0
        started = time.monotonic()
        stop_at = started + duration

        def problem(text: str) -> None:
            if len(report.first_problems) < 10:
                report.first_problems.append(text)

        async def one(endpoint: str, i: int) -> None:
            image = images[i]
            if endpoint == "/decode":
                kwargs = {"content": latest[i], "headers": {"Content-Type": "application/octet-stream"}}
            else:
                kwargs = {"content": image.png, "headers": {"Content-Type": "image/png"},
                          "params": params | ({"heatmap": "false"} if endpoint == "/anomaly-score" else {})}
            stats = report.stats[endpoint]
            stats.requests += 1
            t0 = time.perf_counter()
            try:
                response = await client.post(endpoint, **kwargs)
            except httpx.HTTPError as exc:
                stats.errors += 1
                stats.transport += 1
                problem(f"{endpoint}[{i}]: transport error {type(exc).__name__}: {exc}")
                return
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                stats.errors += 1
                stats.server_errors += response.status_code >= 500
                stats.overloaded += response.status_code == 503
                if response.status_code != 503:
                    problem(f"{endpoint}[{i}]: HTTP {response.status_code} {response.text[:200]}")
                return
            if endpoint == "/encode":
                why = checker.encode(i, response)
                if why is None:
                    latest[i] = response.content
            elif endpoint == "/anomaly-score":
                why = checker.score(i, response)
            else:
                why = checker.image(endpoint.strip("/"), i, response)
            if why:
                stats.mismatches += 1
                problem(why)

        async def attack_one(attack: Attack) -> None:
            stats = report.stats[f"! {attack.name}"]
            stats.requests += 1
            t0 = time.perf_counter()
            try:
                if attack.raw_head is not None:
                    status, body = await _raw_exchange(url, attack.raw_head, timeout)
                else:
                    response = await client.request(attack.method, attack.path, content=attack.body or None,
                                                    headers={"Content-Type": attack.content_type} if attack.content_type else {})
                    status, body = response.status_code, response.content
            except (httpx.HTTPError, OSError, TimeoutError) as exc:
                stats.errors += 1
                stats.transport += 1
                problem(f"{attack.name}: transport error {type(exc).__name__}: {exc}")
                return
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            stats.errors += status != 200
            stats.server_errors += status >= 500
            stats.overloaded += status == 503
            if (why := judge(attack, status, body)) is not None:
                stats.mismatches += 1
                problem(why)

        async def worker() -> None:
            nonlocal issued
            while time.monotonic() < stop_at and (not max_requests or issued < max_requests):
                issued += 1
                if attacks and rng.random() < hostile:
                    await attack_one(rng.choice(attacks))
                else:
                    await one(rng.choice(endpoints), rng.randrange(len(images)))

        async def sample_rss() -> None:
            while True:
                await asyncio.sleep(2.0)
                rss = await _rss(client)
                if rss is not None:
                    report.rss_max = max(report.rss_max or 0, rss)

        sampler = asyncio.create_task(sample_rss())
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        report.duration_s = time.monotonic() - started
        report.rss_end = await _rss(client)
        if report.rss_end is not None:
            report.rss_max = max(report.rss_max or 0, report.rss_end)
        report.max_score_deviation = checker.max_score_deviation
        report.max_level_deviation = checker.max_level_deviation
        return report


# ---- our own server, when no --url is given -------------------------------------------------------
@contextlib.contextmanager
def own_server(models_dir: Path, env_overrides: dict[str, str], timeout: float = 300.0) -> Iterator[str]:
    """`python -m service` on a free loopback port over `models_dir`; SIGTERM (graceful) at the end."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"AEC_MODELS_DIR": str(models_dir), "AEC_HOST": "127.0.0.1", "AEC_PORT": str(port),
                        "AEC_LOG_LEVEL": "WARNING", "TF_CPP_MIN_LOG_LEVEL": "2"} | env_overrides
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} during startup")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready within {timeout} s")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", help="load this running server (loopback) instead of starting one")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models_store",
                        help="store for the server this script starts (default %(default)s)")
    parser.add_argument("--model", help="model to load (default: the server's default)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default %(default)s)")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many requests (0 = no cap)")
    parser.add_argument("--images", type=int, default=12, help="distinct test images (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=os.environ.get("AEC_API_KEY"), help="X-API-Key (env AEC_API_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    parser.add_argument("--hostile", type=float, default=0.0, metavar="F",
                        help="fraction of requests that are attacks, each checked for its one right answer "
                             "(rows starting with '!'; default %(default)s)")
    parser.add_argument("--server-env", action="append", default=[], metavar="AEC_X=V",
                        help="setting for the server this script starts (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.server_env)
    load = {"model": args.model, "duration": args.duration, "concurrency": args.concurrency,
            "max_requests": args.max_requests, "n_images": args.images, "seed": args.seed, "api_key": args.api_key,
            "timeout": args.timeout, "hostile": args.hostile}
    if args.url:
        report = asyncio.run(run_load(args.url, **load))
    else:
        with own_server(args.models_dir, overrides) as url:
            report = asyncio.run(run_load(url, **load))
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
