"""bench/load.py's driver: reference answers one request at a time, then sustained mixed load (attacks
mixed in with --hostile), every answer checked against its request."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Sequence

import httpx
import numpy as np

from bench.loadlib.attacks import Attack, judge, make_attacks, raw_exchange
from bench.loadlib.images import PIXEL_TOLERANCE, Checker, Reference, TestImage, make_images, png_pixels
from bench.loadlib.report import EndpointStats, Report

ENDPOINTS = ("/encode", "/decode", "/reconstruct", "/anomaly-score")


async def _rss(client: httpx.AsyncClient) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        text = (await client.get("/metrics")).text
        match = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.MULTILINE)
        return int(float(match.group(1))) if match else None
    return None


async def record_references(client: httpx.AsyncClient, images: Sequence[TestImage], params: dict, calibrated: bool
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
        recon_px = png_pixels(recon.content)
        refs.append(Reference(encoded.content, recon_px, score,
                              int(np.abs(png_pixels(decoded.content) - recon_px).max())))
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
        references = await record_references(client, images, params, calibrated)
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
                    status, body = await raw_exchange(url, attack.raw_head, timeout)
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
