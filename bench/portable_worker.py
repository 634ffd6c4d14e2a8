"""One side of the cross-configuration check (`bench/portable.py`): encode or decode through the
service's code path, in a process of its own so that its TensorFlow configuration is its own
(`TF_ENABLE_ONEDNN_OPTS` must be set before TensorFlow is imported, intra-op threads before it starts):

    python -m bench.portable_worker encode <version dir> <out.npz> [--images DIR] [--count N] [--threads N]
    python -m bench.portable_worker decode <version dir> <streams.npz> <out.npz> [--threads N]

`encode` codes the images (the first N of DIR, else N synthetic photo-like ones) at each quality of
`QUALITIES` (clipped to the model's range) and saves the streams, their symbols and timings; `decode`
decodes saved streams and saves symbols, pixels and timings, or the error each stream met.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np

QUALITIES = (2.0, 5.0, 8.0)
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def synthetic_images(count: int, size: int = 384, seed: int = 0) -> list[np.ndarray]:
    """Photo-like RGB fields, uint8: 1/f noise (the spectrum of natural images) plus hard edges."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    images = []
    for n in range(count):
        planes = []
        for _ in range(3):
            field = np.real(np.fft.ifft2(falloff * np.exp(2j * np.pi * rng.uniform(size=(size, size)))))
            planes.append((field - field.mean()) / (4 * field.std()))
        image = 0.5 + np.stack(planes, axis=-1) * np.array([1.0, 0.8, 0.9])
        y, x = np.mgrid[0:size, 0:size]
        image[(x + (2 + n % 3) * y) % 97 < 9] += 0.25
        images.append(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    return images


def folder_images(folder: Path, count: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES][:count]


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """What the client receives: 8-bit pixels (the service's decode returns uint8; floats in [0, 1] too)."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)


async def _open(version_dir: Path, threads: int):
    from service.inference.registry import ModelRegistry, configure_tensorflow

    configure_tensorflow(threads)
    store = Path(tempfile.mkdtemp(prefix="portable-"))
    (store / version_dir.parent.name).mkdir()
    os.symlink(version_dir.resolve(), store / version_dir.parent.name / version_dir.name)
    registry = ModelRegistry(store)
    report = await registry.refresh()
    if report.failed:
        raise SystemExit(f"could not load {version_dir}: {report.failed}")
    return registry, registry.resolve(version_dir.parent.name, int(version_dir.name))


async def encode(version_dir: Path, out: Path, threads: int, images: Path | None, count: int) -> None:
    from service.inference import codec, imaging

    registry, model = await _open(version_dir, threads)
    rate = model.card.rate
    qualities = sorted({min(max(q, rate.min_quality), rate.max_quality) for q in QUALITIES}) if rate else [None]
    sources = ([imaging.read_image(data, 3, 1 << 26) for data in folder_images(images, count)] if images else
               [imaging.SourceImage(pixels, 3, "png") for pixels in synthetic_images(count)])
    saved: dict[str, np.ndarray] = {}
    for i, source in enumerate(sources):
        for j, quality in enumerate(qualities):
            started = time.perf_counter()
            encoded = await codec.encode(model, source, quality=quality)
            saved[f"time_{i}_{j}"] = np.array([time.perf_counter() - started, source.height * source.width / 1e6])
            saved[f"stream_{i}_{j}"] = np.frombuffer(encoded.stream, np.uint8)
            for name, value in codec.unpack(model, codec.parse(encoded.stream)).items():
                saved[f"symbols_{i}_{j}_{name}"] = value
    np.savez(out, **saved)
    await registry.close()


async def decode(version_dir: Path, streams: Path, out: Path, threads: int) -> None:
    from service.inference import codec

    registry, model = await _open(version_dir, threads)
    saved: dict[str, np.ndarray] = {}
    with np.load(streams) as data:
        for key in [k for k in data.files if k.startswith("stream_")]:
            tag = key.removeprefix("stream_")
            stream = codec.parse(data[key].tobytes())
            try:
                started = time.perf_counter()
                pixels, _ = await codec.decode(model, stream, max_pixels=1 << 26)
                saved[f"time_{tag}"] = np.array([time.perf_counter() - started, stream.height * stream.width / 1e6])
                saved[f"pixels_{tag}"] = _as_uint8(pixels)
                for name, value in codec.unpack(model, stream).items():
                    saved[f"symbols_{tag}_{name}"] = value
            except Exception as exc:  # noqa: BLE001 -- reported by bench/portable.py, which fails on it
                saved[f"error_{tag}"] = np.frombuffer(f"{type(exc).__name__}: {exc}".encode(), np.uint8)
    np.savez(out, **saved)
    await registry.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["encode", "decode"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--count", type=int, default=24)
    args = parser.parse_args()
    if args.mode == "encode":
        asyncio.run(encode(args.paths[0], args.paths[1], args.threads, args.images, args.count))
    else:
        asyncio.run(decode(args.paths[0], args.paths[1], args.paths[2], args.threads))


if __name__ == "__main__":
    main()
