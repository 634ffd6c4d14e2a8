"""One side of the cross-configuration check: encode or decode through the service's code path.

Run in a fresh process per TensorFlow configuration (`TF_ENABLE_ONEDNN_OPTS` must be set before
TensorFlow is imported; the intra-op thread count before it starts):

    python -m tests.portable.worker encode <version dir> <out.npz> [--threads N]
    python -m tests.portable.worker decode <version dir> <streams.npz> <out.npz> [--threads N]

`encode` codes `test_images()` at every quality of `QUALITIES` (clipped to the model's range) and saves
the streams with their symbols; `decode` decodes saved streams and saves symbols and pixels, or the
error each stream met.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np

QUALITIES = (2.0, 5.0, 8.0)


def test_images(count: int = 3, size: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Photo-like RGB fields: 1/f noise (the spectrum of natural images) plus a few hard edges."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    images = []
    for _ in range(count):
        planes = []
        for _ in range(3):
            spectrum = falloff * np.exp(2j * np.pi * rng.uniform(size=(size, size)))
            field = np.real(np.fft.ifft2(spectrum))
            planes.append((field - field.mean()) / (4 * field.std()))
        image = 0.5 + np.stack(planes, axis=-1) * np.array([1.0, 0.8, 0.9])
        y, x = np.mgrid[0:size, 0:size]
        image[(x + 2 * y) % 97 < 9] += 0.25
        images.append(np.clip(image, 0.0, 1.0).astype(np.float32))
    return images


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


async def encode(version_dir: Path, out: Path, threads: int) -> None:
    from service.inference import codec, imaging

    registry, model = await _open(version_dir, threads)
    rate = model.card.rate
    qualities = sorted({min(max(q, rate.min_quality), rate.max_quality) for q in QUALITIES}) if rate else [None]
    saved: dict[str, np.ndarray] = {}
    for i, pixels in enumerate(test_images()):
        for j, quality in enumerate(qualities):
            encoded = await codec.encode(model, imaging.SourceImage(pixels, 3, "png"), quality=quality)
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
        keys = [k for k in data.files if k.startswith("stream_")]
        for key in keys:
            tag = key.removeprefix("stream_")
            stream = codec.parse(data[key].tobytes())
            try:
                for name, value in codec.unpack(model, stream).items():
                    saved[f"symbols_{tag}_{name}"] = value
                pixels, _ = await codec.decode(model, stream, max_pixels=1 << 24)
                saved[f"pixels_{tag}"] = np.round(pixels * 255).astype(np.uint8)
            except Exception as exc:  # noqa: BLE001 -- reported to the test, which fails on it
                saved[f"error_{tag}"] = np.frombuffer(f"{type(exc).__name__}: {exc}".encode(), np.uint8)
    np.savez(out, **saved)
    await registry.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["encode", "decode"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "encode":
        asyncio.run(encode(args.paths[0], args.paths[1], args.threads))
    else:
        asyncio.run(decode(args.paths[0], args.paths[1], args.paths[2], args.threads))


if __name__ == "__main__":
    main()
