"""Rate–distortion benchmark: our codec through the service's own code path vs Pillow's JPEG, WebP, AVIF.

    python bench/rd.py /work/shared/datasets/natural/McMaster --models natural \\
        --plot artifacts/rd.png --json artifacts/rd.json

Any folder of images works (every file Pillow can open; several folders or single files may be given).

Our codec: each selected model (`--models`: comma-separated names, globs or prefixes; by default every
any-size model of `--models-dir`; the newest version of each) is one operating point, and a variable-rate
model one per quality of `--our-qualities` (default: its whole range in steps of 0.5, so its curve is
sampled between the trained levels too, as JPEG's is between its integer qualities). The models are
loaded by the service's `ModelRegistry` (so they pass the same checks and golden round trip as when
served) and every image goes the way an HTTP request goes: `imaging.read_image` on the file's bytes → `codec.encode` (pad to the size multiple,
`encode` signature through the micro-batcher, range coding, bitstream header) → the stream's bytes →
`codec.parse` → `registry.resolve` from the header → `codec.decode` → `imaging.encode_image` (the PNG
the /decode route returns) → 8-bit RGB. bpp = len(stream) × 8 / (H × W), header included.

Classic codecs (Pillow): JPEG with 4:2:0 chroma subsampling and optimised Huffman tables, WebP lossy
(method 6), AVIF (4:2:0, `--avif-speed`) when Pillow has the AVIF plugin. Each is swept over quality
settings; bpp counts the whole file (headers included). Results are cached per image content and codec
settings (`--cache`), so a second run over the same folder only pays for our codec.

PSNR is measured on 8-bit RGB against the image the service sees (grey images compared as grey
repeated to RGB, transparency composited on white, as the service does), 10·log10(255² / MSE) over all
pixels and channels.

Figures:
- "PSNR @ b bpp": per image, the PSNR at b bpp on that image's own curve (its rate–distortion frontier,
  linear in bpp between points; n/a for an image whose curve does not reach b), then the mean over the
  images that have a value ("(k/n)" shows when only k of the n images do).
- "over every image": as "PSNR @ b bpp", but an image whose curve stops short of b counts too, read
  off the straight line through the two nearest points of its curve ("(e extrap.)": how many images
  were read so). Issue #4's reference figures for WebP and AVIF on McMaster are this reading.
- "on the mean curves": the PSNR at b bpp read off each codec's MEAN curve (the plotted one: mean bpp
  and mean PSNR over ALL images per quality setting / operating point, linear in bpp between points).
  Where a codec cannot reach b on some images (WebP's lowest quality spends over 0.25 bpp on some),
  the per-image mean above is over the easier images only and reads high; this one compares every
  codec on the same images, so it is the one that says whose curve is above whose at b.
- BD-rate (`bench/bdrate.py`, PCHIP by default) of each codec against JPEG and WebP, on the MEAN curves
  (per quality setting / per operating point: mean bpp and mean PSNR over the images), over the whole
  PSNR range the two curves share, and over 0.25–1.0 bpp (the PSNR interval where both curves spend
  0.25 to 1.0 bpp). Negative = fewer bits than the anchor for the same PSNR. The per-image BD-rates
  averaged over images are printed below the table and stored in the JSON.
- enc/dec s/MP: wall-clock seconds per megapixel, median over images (ours: also over operating
  points, per operating point in the second table). Ours: `codec.encode` (pixels → stream bytes) and
  parse + resolve + `codec.decode` (bytes → pixels), image file decode/encode excluded; classic:
  Pillow save / open+load at quality `--speed-quality`, measured fresh in each run (never cached).
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import hashlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image, features

from bench import bdrate

TARGETS = (0.125, 0.25, 0.5, 1.0)
BD_RANGE = (0.25, 1.0)
OURS = "ours"
ANCHORS = ("jpeg", "webp", "avif")  # BD-rate of every curve against each of these classic codecs
UNLIMITED_PIXELS = 1 << 62


# ---- images --------------------------------------------------------------------------------------------
@dataclass
class BenchImage:
    path: Path
    data: bytes  # what is posted to the service: the file's bytes (or a lossless PNG of it, see `load`)
    reference: np.ndarray  # uint8 [H, W, 3]: what the service sees, as 8-bit RGB
    note: str = ""

    @property
    def height(self) -> int:
        return int(self.reference.shape[0])

    @property
    def width(self) -> int:
        return int(self.reference.shape[1])

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.reference.tobytes() + repr(self.reference.shape).encode()).hexdigest()[:32]


def list_images(paths: Sequence[str]) -> list[Path]:
    """Files of each folder (sorted, hidden files skipped) and files named directly."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"rd.py: {raw} is neither a folder nor a file")
    return found


def load(path: Path, max_pixels: int) -> BenchImage | str:
    """The bytes to post and the 8-bit RGB reference, or why the file is skipped."""
    from service.inference import imaging
    from service.inference.errors import ServiceError

    data = path.read_bytes()
    note = ""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            if fmt not in imaging.ACCEPTED_FORMATS:  # e.g. PPM: a client would send it as PNG
                probe.load()
                buffer = io.BytesIO()
                probe.save(buffer, format="PNG")
                data, note = buffer.getvalue(), f"{fmt} sent as lossless PNG"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return "not an image Pillow can open"
    try:
        source = imaging.read_image(data, 3, max_pixels)
    except ServiceError as exc:  # what the service would answer (too many pixels, corrupt data)
        return exc.message
    return BenchImage(path, data, imaging.to_uint8(source.pixels), note)


def psnr_u8(reference: np.ndarray, decoded: np.ndarray) -> float:
    if reference.shape != decoded.shape:
        raise ValueError(f"decoded image is {decoded.shape}, the original {reference.shape}")
    mse = float(np.mean(np.square(reference.astype(np.float64) - decoded.astype(np.float64))))
    return 10.0 * math.log10(255.0**2 / mse) if mse > 0 else math.inf


def rgb_u8(file_bytes: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(file_bytes)) as image:
        return np.asarray(image.convert("RGB"))


# ---- our codec through the service's code path ---------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    name: str
    version: int
    path: Path


def select_models(models_dir: Path, spec: str | None) -> list[OperatingPoint]:
    """Newest version of every model named by `spec`: comma-separated exact names, globs or prefixes,
    or `name/version` for one version (so two versions of a model can be compared side by side);
    None = every any-size model (fixed-size models would be fed resized images)."""
    from contract.card import ModelCard
    from service.inference.registry import ModelRegistry

    found = ModelRegistry(models_dir).scan()
    newest: dict[str, tuple[int, Path]] = {}
    for (name, version), path in found.items():
        if name not in newest or version > newest[name][0]:
            newest[name] = (version, path)
    known = ", ".join(sorted(newest)) or "none"
    if spec is None:
        chosen = []
        for name, (_, path) in sorted(newest.items()):
            if _any_size(ModelCard, path):
                chosen.append(name)
        if not chosen:
            raise SystemExit(f"rd.py: no any-size model in {models_dir} (models there: {known}); name some with --models")
    else:
        chosen = []
        pinned: list[OperatingPoint] = []
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            name, _, version = item.partition("/")
            if version:
                if not version.isascii() or not version.isdigit() or (name, int(version)) not in found:
                    raise SystemExit(f"rd.py: no version {item!r} in {models_dir} (models there: {known})")
                pinned.append(OperatingPoint(name, int(version), found[(name, int(version))]))
                continue
            if any(c in item for c in "*?["):
                hits = sorted(n for n in newest if fnmatch.fnmatchcase(n, item))
            elif item in newest:
                hits = [item]
            else:
                hits = sorted(n for n in newest if n.startswith(item))
            if not hits:
                raise SystemExit(f"rd.py: no model in {models_dir} matches {item!r} (models there: {known})")
            chosen += [h for h in hits if h not in chosen]
        return pinned + [OperatingPoint(n, newest[n][0], newest[n][1]) for n in chosen
                         if (n, newest[n][0]) not in {(p.name, p.version) for p in pinned}]
    return [OperatingPoint(n, newest[n][0], newest[n][1]) for n in chosen]


def _any_size(card_cls: Any, path: Path) -> bool:
    try:
        return bool(card_cls.read(path).input.any_size)
    except (OSError, ValueError):  # an unreadable card: left out (the registry says why if named)
        return False


@dataclass
class OursResult:
    points: dict[str, list[dict]] = field(default_factory=dict)  # image path → one dict per operating point
    models: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _steps(start: float, stop: float, step: float) -> list[float]:
    return [round(start + i * step, 2) for i in range(round((stop - start) / step) + 1)]


async def run_ours(
    points: Sequence[OperatingPoint], images: Sequence[BenchImage], max_pixels: int, log: Callable[[str], None],
    our_qualities: Sequence[float] | None = None,
) -> OursResult:
    """Encode and decode every image at every operating point, as the /encode and /decode routes do."""
    from service.inference import codec, imaging
    from service.inference.errors import ServiceError
    from service.inference.registry import ModelRegistry

    result = OursResult()
    with tempfile.TemporaryDirectory(prefix="rd-models-") as tmp:
        # A store holding just the selected versions (links), so the registry loads only those; where
        # links cannot be made, the whole models dir is loaded and the selected versions picked from it.
        store = Path(tmp)
        try:
            for point in points:
                (store / point.name).mkdir()
                os.symlink(point.path.resolve(), store / point.name / str(point.version), target_is_directory=True)
        except OSError:
            store = points[0].path.parent.parent
        registry = ModelRegistry(store, max_batch_size=1, max_wait_s=0.0)
        started = time.perf_counter()
        report = await registry.refresh()
        wanted = {(p.name, p.version) for p in points}
        for failure in report.failed:
            if (failure.name, failure.version) in wanted:
                result.skipped.append(f"{failure.name}/{failure.version} failed to load: {failure.error}")
                log(f"  ! {failure.name}/{failure.version} failed to load: {failure.error}")
        loaded = [registry.resolve(n, v) for n, v in report.added if (n, v) in wanted]
        log(f"loaded {len(loaded)} model(s) in {time.perf_counter() - started:.1f} s")
        paths = {(p.name, p.version): p.path for p in points}
        operating: list[tuple[Any, float | None, str]] = []  # (model, quality, label)
        several = {m.name for m in loaded if sum(o.name == m.name for o in loaded) > 1}
        for model in loaded:
            shown = f"{model.name}/{model.version}" if model.name in several else model.name
            rate = model.card.rate
            qualities = [None] if rate is None else sorted(
                q for q in (our_qualities or _steps(rate.min_quality, rate.max_quality, 0.5))
                if rate.min_quality <= q <= rate.max_quality)
            for quality in qualities:
                label = shown if quality is None else f"{shown}@q{quality:g}"
                operating.append((model, quality, label))
                result.models.append({
                    "name": label, "model": model.name, "version": model.version, "quality": quality,
                    "architecture": model.card.architecture,
                    "lmbda": model.card.config.get("lmbda") if rate is None else rate.lmbda_at(quality),
                    "path": str(paths[(model.name, model.version)]),
                })
        try:
            for index, image in enumerate(images):
                rows = []
                for model, quality, label in operating:
                    try:
                        source = imaging.read_image(image.data, model.card.input.channels, max_pixels)
                        t0 = time.perf_counter()
                        encoded = await codec.encode(model, source, quality=quality)
                        enc_s = time.perf_counter() - t0
                        data = bytes(encoded.stream)  # what the client receives; decoding starts from it alone
                        t0 = time.perf_counter()
                        stream = codec.parse(data)
                        decoder = registry.resolve(stream.model, stream.version)
                        pixels, _ = await codec.decode(decoder, stream, max_pixels)
                        dec_s = time.perf_counter() - t0
                        png = imaging.encode_image(pixels, "png")
                    except ServiceError as exc:
                        result.skipped.append(f"{image.path.name} with {label}: {exc.message}")
                        log(f"  ! {image.path.name} with {label}: {exc.message}")
                        continue
                    if (stream.height, stream.width) != (image.height, image.width):
                        raise RuntimeError(f"{image.path}: stream header says {stream.width}x{stream.height}")
                    decoded = rgb_u8(png)
                    bpp = len(data) * 8 / image.pixels
                    if not math.isclose(bpp, encoded.bpp):
                        raise RuntimeError(f"{image.path}: service reports {encoded.bpp} bpp, the stream has {bpp}")
                    mp = image.pixels / 1e6
                    rows.append({
                        "model": label, "version": model.version, "quality": quality, "bytes": len(data), "bpp": bpp,
                        "psnr": psnr_u8(image.reference, decoded), "enc_s": enc_s, "dec_s": dec_s,
                        "enc_s_per_mp": enc_s / mp, "dec_s_per_mp": dec_s / mp,
                    })
                result.points[str(image.path)] = rows
                summary = ", ".join(f"{r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in rows)
                log(f"  [{index + 1}/{len(images)}] {image.path.name} {image.width}x{image.height}: {summary}")
        finally:
            await registry.close()
    return result


# ---- classic codecs --------------------------------------------------------------------------------------
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
    """(bytes, PSNR) per quality, one JSON file per image content and codec, keyed by the codec settings."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _file(self, digest: str, codec: Classic) -> Path:
        assert self.folder is not None
        return self.folder / f"{digest}-{codec.key}.json"

    def get(self, digest: str, codec: Classic) -> dict[int, tuple[int, float]]:
        if self.folder is None:
            return {}
        try:
            stored = json.loads(self._file(digest, codec).read_text()).get(codec.settings_id, {})
        except (OSError, ValueError):
            return {}
        return {int(q): (int(b), math.inf if p is None else float(p)) for q, (b, p) in stored.items()}

    def put(self, digest: str, codec: Classic, points: dict[int, tuple[int, float]]) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(digest, codec)
        try:
            everything = json.loads(path.read_text())
        except (OSError, ValueError):
            everything = {}
        everything[codec.settings_id] = {str(q): [b, None if math.isinf(p) else p] for q, (b, p) in sorted(points.items())}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(everything))
        tmp.replace(path)


def sweep(image: BenchImage, codec: Classic, qualities: Sequence[int], cache: SweepCache) -> list[dict]:
    """(quality, bytes, bpp, PSNR) for every quality, from the cache where it has them."""
    known = cache.get(image.digest, codec)
    missing = [q for q in qualities if q not in known]
    if missing:
        picture = Image.fromarray(image.reference)
        for q in missing:
            data = codec.save(picture, q)
            known[q] = (len(data), psnr_u8(image.reference, rgb_u8(data)))
        cache.put(image.digest, codec, known)
    return [{"quality": q, "bytes": known[q][0], "bpp": known[q][0] * 8 / image.pixels, "psnr": known[q][1]}
            for q in qualities]


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


# ---- summaries -----------------------------------------------------------------------------------------
def image_curves(per_image: dict[str, list[dict]]) -> dict[str, tuple[list[float], list[float]]]:
    return {path: ([r["bpp"] for r in rows], [r["psnr"] for r in rows]) for path, rows in per_image.items()}


def mean_curve(per_image: dict[str, list[dict]], key: str) -> list[dict]:
    """Mean bpp and mean PSNR per setting (`key`: quality or model) over the images that have it."""
    groups: dict[Any, list[dict]] = {}
    for rows in per_image.values():
        for r in rows:
            groups.setdefault(r[key], []).append(r)
    curve = []
    for setting, rows in groups.items():
        psnrs = [r["psnr"] for r in rows]
        curve.append({key: setting, "n": len(rows), "bpp": statistics.fmean(r["bpp"] for r in rows),
                      "psnr": statistics.fmean(psnrs) if all(math.isfinite(p) for p in psnrs) else math.inf})
    return sorted(curve, key=lambda c: c["bpp"])


def psnr_at_targets(curves: dict[str, tuple[list[float], list[float]]], targets: Sequence[float]) -> list[dict]:
    """Per target: the mean over the images whose own curve reaches it (`mean_psnr`, `images` of `of`),
    and the mean over every image, each curve extended linearly beyond its own range where it does not
    reach the target (`mean_psnr_all`, `extrapolated` images): the reading issue #4's reference figures use."""
    out = []
    for target in targets:
        values: list[float] = []  # images whose curve reaches the target
        extended: list[float] = []  # the others, read off their curve's straight extension
        for r, p in curves.values():
            if (v := bdrate.psnr_at(r, p, target)) is not None:
                values.append(v)
            elif (v := bdrate.psnr_at(r, p, target, extrapolate=True)) is not None:
                extended.append(v)
        every = values + extended
        out.append({"bpp": target, "mean_psnr": statistics.fmean(values) if values else None,
                    "images": len(values), "of": len(curves),
                    "mean_psnr_all": statistics.fmean(every) if every and len(every) == len(curves) else None,
                    "extrapolated": len(extended)})
    return out


def psnr_on_mean_curve(curve: list[dict], targets: Sequence[float]) -> list[dict]:
    """PSNR at each target bpp on a mean curve (its frontier, linear in bpp); None outside its range."""
    rates, psnrs = [c["bpp"] for c in curve], [c["psnr"] for c in curve]
    return [{"bpp": t, "psnr": bdrate.psnr_at(rates, psnrs, t)} for t in targets]


def _targets_table(rows: list[dict], targets: Sequence[float], key: str, cell: Callable[[dict], str]) -> str:
    """One line per codec, one column per target bpp, each cell from the row's `key` entry for it."""
    lines = ["| codec | " + " | ".join(f"@{t:g} bpp" for t in targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['label']} | " + " | ".join(cell(e) for e in row[key]) + " |")
    return "\n".join(lines)


def render_mean_curve_table(rows: list[dict], targets: Sequence[float]) -> str:
    return _targets_table(rows, targets, "psnr_on_mean_curve", lambda e: fmt(e["psnr"], ".2f"))


def render_every_image_table(rows: list[dict], targets: Sequence[float]) -> str:
    """Per-image PSNR at each target over every image; "(e extrap.)" counts the images read off the
    straight extension of their own curve because it stops short of the target."""
    def cell(entry: dict) -> str:
        if entry["mean_psnr_all"] is None:
            return "n/a"
        return f"{entry['mean_psnr_all']:.2f}" + (f" ({entry['extrapolated']} extrap.)" if entry["extrapolated"] else "")

    return _targets_table(rows, targets, "psnr_at", cell)


def bd_pair(anchor: list[dict], test: list[dict], method: str) -> dict[str, float | None]:
    args = ([c["bpp"] for c in anchor], [c["psnr"] for c in anchor], [c["bpp"] for c in test], [c["psnr"] for c in test])
    return {"full": bdrate.bd_rate(*args, method=method),
            "0.25-1.0": bdrate.bd_rate(*args, method=method, rate_range=BD_RANGE)}


def per_image_bd(anchor: dict[str, list[dict]], test: dict[str, list[dict]], method: str) -> dict[str, Any]:
    values: dict[str, list[float]] = {"full": [], "0.25-1.0": []}
    for path, rows in test.items():
        if path not in anchor:
            continue
        pair = bd_pair(anchor[path], rows, method)
        for key, value in pair.items():
            if value is not None:
                values[key].append(value)
    return {key: {"mean": statistics.fmean(v) if v else None, "images": len(v), "of": len(test)}
            for key, v in values.items()}


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def psnr_cell(entry: dict) -> str:
    if entry["mean_psnr"] is None:
        return "n/a"
    partial = f" ({entry['images']}/{entry['of']})" if entry["images"] < entry["of"] else ""
    return f"{entry['mean_psnr']:.2f}{partial}"


def render_table(rows: list[dict], targets: Sequence[float]) -> str:
    anchors = [a for a in ANCHORS if any(a in row["bd"] for row in rows)]
    names = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
    header = (["codec"] + [f"PSNR @{t:g} bpp" for t in targets]
              + [f"BD vs {names[a]}{r}" for a in anchors for r in ("", " 0.25-1")] + ["enc s/MP", "dec s/MP"])
    body = []
    for row in rows:
        cells = [row["label"]] + [psnr_cell(e) for e in row["psnr_at"]]
        for anchor in anchors:
            bd = row["bd"].get(anchor)
            cells += [fmt(bd and bd["full"], "+.1f", "%"), fmt(bd and bd["0.25-1.0"], "+.1f", "%")] if bd else ["-", "-"]
        cells += [fmt(row["enc_s_per_mp"], ".3f"), fmt(row["dec_s_per_mp"], ".3f")]
        body.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |" for cells in body]
    return "\n".join(lines)


def render_points(models: list[dict], ours: dict[str, list[dict]], by_model: dict[str, dict]) -> str:
    lines = ["| operating point | lmbda | images | mean bpp | mean PSNR | enc s/MP | dec s/MP |", "|---|---|---|---|---|---|---|"]
    for m in models:
        rows = [r for rs in ours.values() for r in rs if r["model"] == m["name"]]
        c = by_model.get(m["name"])
        if c is None:
            continue
        point = f"{m['model']}/{m['version']}" + ("" if m["quality"] is None else f" q{m['quality']:g}")
        lines.append(
            f"| {point} | {fmt(m['lmbda'], 'g')} | {c['n']} | {c['bpp']:.4f} | {c['psnr']:.2f} | "
            f"{fmt(median(r['enc_s_per_mp'] for r in rows), '.3f')} | {fmt(median(r['dec_s_per_mp'] for r in rows), '.3f')} |"
        )
    return "\n".join(lines)


def plot(path: Path, curves: dict[str, list[dict]], title: str, max_bpp: float, targets: Sequence[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    styles = {"JPEG": "tab:red", "WebP": "tab:green", "AVIF": "tab:purple"}
    ours_colors = iter(["tab:blue", "tab:orange", "tab:cyan", "tab:brown", "tab:olive"])
    for label, curve in curves.items():
        r, p = bdrate.frontier([c["bpp"] for c in curve], [c["psnr"] for c in curve])
        keep = r <= max_bpp * 1.05
        if label in styles:
            ax.plot(r[keep], p[keep], "-", color=styles[label], label=label, linewidth=1.5)
        else:
            ax.plot(r[keep], p[keep], "o-", color=next(ours_colors, "tab:gray"), label=label, linewidth=2,
                    markersize=5)
    for t in targets:
        ax.axvline(t, color="0.8", linewidth=0.8, linestyle=":", zorder=0)
    ax.axvspan(*BD_RANGE, color="0.95", zorder=-1)
    ax.set_xlim(0, max_bpp)
    ax.set_xlabel("bits per pixel (whole file or stream, headers included)")
    ax.set_ylabel("PSNR (dB, 8-bit RGB), mean over images")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------------
def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aecodec" / "rd"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="folders of images (or image files)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models_store")
    parser.add_argument("--models", help="comma-separated names, globs or prefixes of models (one operating point "
                        "each, newest version); default: every any-size model in --models-dir")
    parser.add_argument("--our-qualities", type=lambda s: [float(x) for x in s.split(",")],
                        help="variable-rate models: the qualities to sweep, e.g. 1,2,3.5 (default: the model's "
                             "range in steps of 0.5)")
    parser.add_argument("--codecs", default="jpeg,webp,avif", help="classic codecs to compare (jpeg,webp,avif)")
    parser.add_argument("--qualities", type=parse_qualities, default=parse_qualities("1-100"),
                        help="JPEG/WebP quality sweep (default 1-100; forms: 1-100, 1-100:5, 10,50,90)")
    parser.add_argument("--avif-qualities", type=parse_qualities, default=parse_qualities("1-100:3"),
                        help="AVIF quality sweep (default 1-100:3, AVIF encodes are slow)")
    parser.add_argument("--avif-speed", type=int, default=6, help="libavif speed 0 (slowest, best) .. 10 (default 6)")
    parser.add_argument("--speed-quality", type=int, default=75, help="classic codecs' quality for the timing columns")
    parser.add_argument("--targets", type=lambda s: [float(x) for x in s.split(",")], default=list(TARGETS))
    parser.add_argument("--bd-method", choices=("pchip", "cubic"), default="pchip")
    parser.add_argument("--max-pixels", type=int, default=0,
                        help="pixel limit passed to the service code (default 0: none; the service's default is 2048²)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="threads for the classic sweeps")
    parser.add_argument("--cache", type=Path, default=default_cache(), help="classic sweep cache folder")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--plot", type=Path, help="write the mean curves as a PNG")
    parser.add_argument("--plot-max-bpp", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="write every per-image point and the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="print the tables only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    from service.inference import imaging

    max_pixels = args.max_pixels or UNLIMITED_PIXELS
    if args.max_pixels:
        imaging.configure_pillow(args.max_pixels)
    else:
        Image.MAX_IMAGE_PIXELS = None  # a benchmark of the user's own files: no bomb guard

    images: list[BenchImage] = []
    unreadable: list[str] = []
    for path in list_images(args.dirs):
        image = load(path, max_pixels)
        if isinstance(image, str):
            unreadable.append(path.name)
            log(f"note: skipped {path}: {image}")
        else:
            images.append(image)
            if image.note:
                log(f"note: {path}: {image.note}")
        if args.limit and len(images) >= args.limit:
            break
    if not images:
        raise SystemExit("rd.py: no images found")
    megapixels = sum(i.pixels for i in images) / 1e6
    log(f"{len(images)} image(s), {megapixels:.2f} MP in all")

    points = select_models(args.models_dir, args.models)
    log(f"operating points: {', '.join(f'{p.name}/{p.version}' for p in points)}")
    ours = asyncio.run(run_ours(points, images, max_pixels, log, args.our_qualities))
    if not ours.models:
        raise SystemExit("rd.py: no model could be loaded")

    codecs = classic_codecs([c.strip() for c in args.codecs.split(",") if c.strip()], args.avif_speed, log)
    cache = SweepCache(None if args.no_cache else args.cache)
    classic: dict[str, dict[str, list[dict]]] = {c.key: {} for c in codecs}
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {
            (c.key, str(image.path)): pool.submit(
                sweep, image, c, args.avif_qualities if c.key == "avif" else args.qualities, cache)
            for image in images for c in codecs
        }
        for (key, path), future in futures.items():
            classic[key][path] = future.result()
    log(f"classic sweeps: {time.perf_counter() - started:.1f} s")
    speeds = {c.key: [time_classic(image, c, args.speed_quality) for image in images] for c in codecs}

    # ---- summary -----------------------------------------------------------------------------------
    # One curve per model version (several versions of a model, e.g. natural/8 and natural/10, side by side)
    version_of = {m["name"]: f"{m['model']}/{m['version']}" for m in ours.models}
    versions = list(dict.fromkeys(version_of.values()))
    ours_keys = {v: OURS if len(versions) == 1 else f"{OURS}:{v}" for v in versions}
    ours_points = {key: {path: [r for r in rs if ours_keys[version_of[r["model"]]] == key]
                         for path, rs in ours.points.items()} for key in ours_keys.values()}
    means = {key: mean_curve(points, "model") for key, points in ours_points.items()}
    means |= {key: mean_curve(per, "quality") for key, per in classic.items()}
    per_image = dict(ours_points) | classic
    labels = {key: f"ours ({v})" for v, key in ours_keys.items()} | {c.key: c.label for c in codecs}
    rows = []
    for key in per_image:
        row: dict[str, Any] = {"codec": key, "label": labels[key],
                               "psnr_at": psnr_at_targets(image_curves(per_image[key]), args.targets),
                               "psnr_on_mean_curve": psnr_on_mean_curve(means[key], args.targets), "bd": {}}
        for anchor in ANCHORS:
            if anchor in means:
                row["bd"][anchor] = bd_pair(means[anchor], means[key], args.bd_method)
                row.setdefault("bd_per_image", {})[anchor] = per_image_bd(per_image[anchor], per_image[key], args.bd_method)
        if key in ours_points:
            rows_ours = [r for rs in ours_points[key].values() for r in rs]
            row["enc_s_per_mp"] = median(r["enc_s_per_mp"] for r in rows_ours)
            row["dec_s_per_mp"] = median(r["dec_s_per_mp"] for r in rows_ours)
        else:
            row["enc_s_per_mp"] = median(s[0] for s in speeds[key])
            row["dec_s_per_mp"] = median(s[1] for s in speeds[key])
        rows.append(row)

    folders = ", ".join(args.dirs)
    print(f"\nRate–distortion on {folders}: {len(images)} image(s), {megapixels:.2f} MP; "
          f"BD-rate ({args.bd_method}) on mean curves, negative = fewer bits than the anchor")
    print(render_table(rows, args.targets))
    if any(e["mean_psnr"] is not None and e["images"] < e["of"] for row in rows for e in row["psnr_at"]):
        print("(k/n): only k of the n images reach that rate on their own curve; the mean is over those k")
    print("\nPSNR on the mean curves (as plotted: every image, mean bpp and mean PSNR per setting):")
    print(render_mean_curve_table(rows, args.targets))
    print("\nPSNR per image over every image (an image's curve that stops short of b is extended by the line "
          "through its two nearest points):")
    print(render_every_image_table(rows, args.targets))
    for ours_row in rows[: len(ours_points)]:
        for anchor in ANCHORS:
            if anchor in ours_row.get("bd_per_image", {}):
                pi = ours_row["bd_per_image"][anchor]
                print(f"per-image BD-rate of {ours_row['label']} vs {labels[anchor]}, mean over images: "
                      f"{fmt(pi['full']['mean'], '+.1f', '%')} ({pi['full']['images']}/{pi['full']['of']} images), "
                      f"0.25-1.0 bpp {fmt(pi['0.25-1.0']['mean'], '+.1f', '%')} "
                      f"({pi['0.25-1.0']['images']}/{pi['0.25-1.0']['of']} images)")
    keys = list(ours_points)
    for newer in keys[1:]:  # every later version against the first one named
        bd = bd_pair(means[keys[0]], means[newer], args.bd_method)
        print(f"BD-rate of {labels[newer]} vs {labels[keys[0]]} (mean curves): {fmt(bd['full'], '+.1f', '%')} over "
              f"the range both cover, {fmt(bd['0.25-1.0'], '+.1f', '%')} over 0.25-1 bpp")
    print()
    print(render_points(ours.models, ours.points, {r["model"]: r for key in keys for r in means[key]}))
    settings_note = "; ".join(f"{c.label}: {c.settings_id}" for c in codecs)
    print(f"\nclassic: {settings_note}; timing at quality {args.speed_quality}")
    for line in ours.skipped:
        print(f"skipped: {line}")

    if args.plot:
        plot(args.plot, {labels[k]: v for k, v in means.items()},
             f"{folders} ({len(images)} images): mean PSNR vs bpp", args.plot_max_bpp, args.targets)
        log(f"wrote {args.plot}")
    if args.json:
        doc = {
            "folders": args.dirs, "bd_method": args.bd_method, "targets": args.targets, "bd_rate_range": BD_RANGE,
            "models": ours.models, "classic": {c.key: c.settings_id for c in codecs},
            "qualities": {c.key: args.avif_qualities if c.key == "avif" else args.qualities for c in codecs},
            "images": [
                {"path": str(i.path), "width": i.width, "height": i.height, "note": i.note,
                 **{key: per_image[key].get(str(i.path), []) for key in per_image},
                 "speed_s_per_mp": {key: {"enc": speeds[key][n][0], "dec": speeds[key][n][1]} for key in speeds}}
                for n, i in enumerate(images)
            ],
            "mean_curves": means, "table": rows, "skipped": ours.skipped, "unreadable": unreadable,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(doc), indent=1, default=_json_default, allow_nan=False))
        log(f"wrote {args.json}")
    return 0


def _finite(value: Any) -> Any:
    """JSON has no infinity: a lossless PSNR (or any non-finite number) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
