"""bench/load.py --hostile: the attacks of issue 18's classes, each with the one answer it must get."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

from contract.bitstream import Bitstream

MiB = 1024 * 1024
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


async def raw_exchange(url: str, head: bytes, timeout: float) -> tuple[int, bytes]:
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
