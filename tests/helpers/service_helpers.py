"""Shared by the service tests: a REAL uvicorn server on a free loopback port, payload builders
(images, crafted headers) and the one error-shape assertion. The service as a process of its own
(`python -m service`) is bench/launcher.py's `server_process`, shared with the benches."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import uvicorn
from PIL import Image

from service.app.config import Settings
from service.app.main import create_app
from service.app.server import server_config

MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


class LiveServer:
    """uvicorn.Server in a background thread, bound to a socket we opened (no port race), configured as
    `python -m service` configures it (`service.app.server`: head and connection limits, deadlines)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = server_config(self.app, settings, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 60.0, probe: str = "/readyz") -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{probe}", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@contextlib.contextmanager
def live_server(probe: str = "/readyz", **overrides) -> Iterator[LiveServer]:
    """Start a server with these settings and wait until `probe` answers 200."""
    settings = Settings(_env_file=None, **overrides)
    server = LiveServer(settings)
    server.start(probe=probe)
    try:
        yield server
    finally:
        server.stop()


# ---- payload builders ------------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1200"]


@contextlib.contextmanager
def headless_chromium(profile_dir: Path, extra_flags: list[str] = (), capabilities: dict | None = None) -> Iterator:
    """A Selenium driver for Debian's headless Chromium (skipped where it is not installed, a failure in
    CI, which installs it), with a fresh profile and no background network traffic."""
    import shutil

    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed in CI (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    for key, value in (capabilities or {}).items():
        options.set_capability(key, value)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def synthetic_photo(height: int, width: int, seed: int = 0, periods: tuple[float, float] = (2, 7),
                    noise: float = 0.0) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1]: one sine grating per channel, its periods drawn from `periods` by
    `seed`, plus Gaussian noise of that deviation: photo-like texture for codec tests, with no dataset."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    planes = [0.5 + 0.4 * np.sin(x / rng.uniform(*periods) + y / rng.uniform(*periods) + c) for c in range(3)]
    image = np.stack(planes, axis=-1)
    if noise:
        image = image + rng.normal(0, noise, (height, width, 3))
    return np.clip(image, 0, 1).astype(np.float32)


def to_bytes(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save) -> bytes:
    """float [H, W, C] in [0, 1] (or uint8) → encoded image bytes."""
    arr = pixels if pixels.dtype == np.uint8 else np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    image = Image.fromarray(arr)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def noise_image(height: int, width: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims `width`×`height` (valid CRCs; pixel data far too short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bomb(width: int, height: int | None = None) -> bytes:
    """A valid grey PNG of zeros (width x height bytes inflated) in a few KB: a real decompression bomb."""
    height = width if height is None else height

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_PROBE = r"""
import http.client, json, sys, threading, time
host, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
stop, latencies, failures = threading.Event(), [], []
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
conn = http.client.HTTPConnection(host, port, timeout=30)
print("ready", flush=True)
while not stop.is_set():
    started = time.perf_counter()
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            failures.append(f"HTTP {response.status}")
    except Exception as exc:
        failures.append(repr(exc))
        conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=30)
    stop.wait(interval)
print(json.dumps({"latencies_ms": latencies, "failures": failures}), flush=True)
"""


class HealthProbe:
    """GET /healthz in a loop while something else runs: the slowest answer says whether the server's
    event loop stalled. `with HealthProbe(url) as probe: ...; probe.worst_ms`.

    The prober is a small process of its own (stdlib only): in the test process, which has TensorFlow
    loaded, a garbage collection of its ~500,000 objects takes ~0.4 s and would be measured as the
    server's latency, as would the GIL the test's own client threads hold."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url, self.interval = url, interval
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self._process: subprocess.Popen | None = None

    @property
    def worst_ms(self) -> float:
        return max(self.latencies_ms, default=float("nan"))

    def __enter__(self) -> Self:
        host, port = self.url.removeprefix("http://").split(":")
        self._process = subprocess.Popen([sys.executable, "-c", _PROBE, host, port, str(self.interval)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None and self._process.stdout.readline().strip() == "ready"
        time.sleep(0.1)  # a few answers before the attack starts
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        out, _ = self._process.communicate(timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        self.latencies_ms, self.failures = result["latencies_ms"], result["failures"]


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """The one error shape: {"error": {"code", "message"}} and nothing else."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body
