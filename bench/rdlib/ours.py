"""bench/rd.py's own codec: the operating points (models, versions, qualities) and every image encoded
and decoded through the service's code path, as the /encode and /decode routes do."""

from __future__ import annotations

import fnmatch
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.rdlib.images import BenchImage, ms_ssim_db, ms_ssim_u8, psnr_u8, rgb_u8


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


def quality_steps(start: float, stop: float, step: float) -> list[float]:
    return [round(start + i * step, 2) for i in range(round((stop - start) / step) + 1)]


async def run_ours(
    points: Sequence[OperatingPoint], images: Sequence[BenchImage], max_pixels: int, log: Callable[[str], None],
    our_qualities: Sequence[float] | None = None, with_ms_ssim: bool = True, efforts: Sequence[int] = (0,),
) -> OursResult:
    """Encode and decode every image at every operating point, as the /encode and /decode routes do;
    PSNR and (`with_ms_ssim`, images of 161 px a side or more) MS-SSIM of each decoded image. `efforts`:
    the encoder efforts to run models with an effort setting at (one curve each; 0 only for others)."""
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
        operating: list[tuple[Any, float | None, int, str]] = []  # (model, quality, effort, label)
        several = {m.name for m in loaded if sum(o.name == m.name for o in loaded) > 1}
        for model in loaded:
            shown = f"{model.name}/{model.version}" if model.name in several else model.name
            rate = model.card.rate
            qualities = [None] if rate is None else sorted(
                q for q in (our_qualities or quality_steps(rate.min_quality, rate.max_quality, 0.5))
                if rate.min_quality <= q <= rate.max_quality)
            spec = model.card.effort
            for effort in sorted({e for e in efforts if e == 0 or (spec is not None and e <= spec.max_effort)}):
                base = f"{shown}@e{effort}" if effort else shown
                for quality in qualities:
                    label = base if quality is None else f"{base}@q{quality:g}"
                    operating.append((model, quality, effort, label))
                    result.models.append({
                        "name": label, "model": model.name, "version": model.version, "quality": quality,
                        "effort": effort, "architecture": model.card.architecture,
                        "lmbda": model.card.config.get("lmbda") if rate is None else rate.lmbda_at(quality),
                        "path": str(paths[(model.name, model.version)]),
                    })
        try:
            for index, image in enumerate(images):
                rows = []
                for model, quality, effort, label in operating:
                    try:
                        source = imaging.read_image(image.data, model.card.input.channels, max_pixels)
                        t0 = time.perf_counter()
                        encoded = await codec.encode(model, source, quality=quality, effort=effort,
                                                     effort_max_pixels=max_pixels)
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
                    ms_ssim = ms_ssim_u8(image.reference, decoded) if with_ms_ssim else None
                    rows.append({
                        "model": label, "version": model.version, "quality": quality, "effort": effort,
                        "bytes": len(data), "bpp": bpp,
                        "psnr": psnr_u8(image.reference, decoded), "ms_ssim": ms_ssim, "ms_ssim_db": ms_ssim_db(ms_ssim),
                        "enc_s": enc_s, "dec_s": dec_s,
                        "enc_s_per_mp": enc_s / mp, "dec_s_per_mp": dec_s / mp,
                    })
                result.points[str(image.path)] = rows
                summary = ", ".join(f"{r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in rows)
                log(f"  [{index + 1}/{len(images)}] {image.path.name} {image.width}x{image.height}: {summary}")
        finally:
            await registry.close()
    return result
