"""bench/rd.py's classic codecs (Pillow's JPEG, WebP, AVIF): quality sweeps, their cache, timings."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, features

from bench.rdlib.images import BenchImage, ms_ssim_db, ms_ssim_u8, psnr_u8, rgb_u8

#: A measured point of a sweep: (bytes, PSNR), or (bytes, PSNR, MS-SSIM or None where it cannot be measured).
Point = tuple


@dataclass(frozen=True)
class Classic:
    key: str
    label: str
    format: str
    options: tuple[tuple[str, Any], ...]

    def save(self, image: Image.Image, quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=self.format, quality=quality, **dict(self.options))
        return buffer.getvalue()

    @property
    def settings_id(self) -> str:
        import PIL

        lib = {"JPEG": "jpg", "WEBP": "webp", "AVIF": "avif"}[self.format]
        return f"{self.format}{dict(self.options)}|pillow {PIL.__version__}|{lib} {features.version(lib)}"


def classic_codecs(names: Sequence[str], avif_speed: int, log: Callable[[str], None]) -> list[Classic]:
    available = {
        "jpeg": Classic("jpeg", "JPEG", "JPEG", (("subsampling", 2), ("optimize", True))),
        "webp": Classic("webp", "WebP", "WEBP", (("method", 6),)),
        "avif": Classic("avif", "AVIF", "AVIF", (("subsampling", "4:2:0"), ("speed", avif_speed))),
    }
    chosen = []
    for name in names:
        if name not in available:
            raise SystemExit(f"rd.py: unknown codec {name!r} (jpeg, webp, avif)")
        feature = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[name]
        if not features.check(feature):
            log(f"note: Pillow {__import__('PIL').__version__} has no {name.upper()} support here; {name} skipped")
            continue
        chosen.append(available[name])
    return chosen


class SweepCache:
    """(bytes, PSNR[, MS-SSIM]) per quality, one JSON file per image content and codec, keyed by the codec
    settings. A point without a third value had no MS-SSIM measured; a null third value could not be
    (an image under 161 px on a side)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _file(self, digest: str, codec: Classic) -> Path:
        assert self.folder is not None
        return self.folder / f"{digest}-{codec.key}.json"

    def get(self, digest: str, codec: Classic) -> dict[int, Point]:
        if self.folder is None:
            return {}
        try:
            stored = json.loads(self._file(digest, codec).read_text()).get(codec.settings_id, {})
        except (OSError, ValueError):
            return {}
        return {int(q): (int(v[0]), math.inf if v[1] is None else float(v[1]), *v[2:3]) for q, v in stored.items()}

    def put(self, digest: str, codec: Classic, points: dict[int, Point]) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(digest, codec)
        try:
            everything = json.loads(path.read_text())
        except (OSError, ValueError):
            everything = {}
        everything[codec.settings_id] = {str(q): [v[0], None if math.isinf(v[1]) else v[1], *v[2:3]]
                                         for q, v in sorted(points.items())}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(everything))
        tmp.replace(path)


def ms_ssim_qualities(qualities: Sequence[int], stride: int) -> set[int]:
    """The qualities of a sweep whose MS-SSIM is measured: every `stride`-th and the last (0: none). MS-SSIM
    costs ~4.5 CPU-seconds per megapixel, far more than a JPEG encode; a fifth of a 100-point sweep is plenty
    for its curve and its BD-rate."""
    if stride <= 0 or not qualities:
        return set()
    ordered = sorted(qualities)
    return set(ordered[::stride]) | {ordered[-1]}


def sweep(image: BenchImage, codec: Classic, qualities: Sequence[int], cache: SweepCache,
          ms_ssim_at: set[int] | frozenset[int] = frozenset()) -> list[dict]:
    """(quality, bytes, bpp, PSNR, MS-SSIM) for every quality (MS-SSIM at `ms_ssim_at` only, else None), from
    the cache where it has them."""
    known = cache.get(image.digest, codec)
    missing = [q for q in qualities if q not in known or (q in ms_ssim_at and len(known[q]) < 3)]
    if missing:
        picture = Image.fromarray(image.reference)
        for q in missing:
            data = codec.save(picture, q)
            decoded = rgb_u8(data)
            point: Point = (len(data), psnr_u8(image.reference, decoded))
            if q in ms_ssim_at:
                point = (*point, ms_ssim_u8(image.reference, decoded))
            known[q] = point
        cache.put(image.digest, codec, known)
    rows = []
    for q in qualities:
        size, psnr, *rest = known[q]
        value = rest[0] if rest and q in ms_ssim_at else None
        rows.append({"quality": q, "bytes": size, "bpp": size * 8 / image.pixels, "psnr": psnr, "ms_ssim": value,
                     "ms_ssim_db": ms_ssim_db(value)})
    return rows


def time_classic(image: BenchImage, codec: Classic, quality: int) -> tuple[float, float]:
    picture = Image.fromarray(image.reference)
    t0 = time.perf_counter()
    data = codec.save(picture, quality)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rgb_u8(data)
    dec_s = time.perf_counter() - t0
    mp = image.pixels / 1e6
    return enc_s / mp, dec_s / mp


def parse_qualities(text: str) -> list[int]:
    """'1-100', '1-100:5' (step; the end is always included), '10,50,90' or combinations."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        span, _, step = part.partition(":")
        lo, _, hi = span.partition("-")
        a, b = int(lo), int(hi or lo)
        out.update(range(a, b + 1, int(step or 1)))
        out.add(b)
    bad = [q for q in out if not 0 <= q <= 100]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"qualities must be within 0..100: {text!r}")
    return sorted(out)
