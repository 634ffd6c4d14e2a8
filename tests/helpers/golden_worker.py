"""The golden-stream worker (tests/test_golden_streams.py): for each case, encode its committed input
with a shipped model through the service's own code path (`service.inference`) and decode the committed
stream, in a process of its own so that its TensorFlow configuration is fixed whatever ran before it
(CPU, oneDNN on, one intra-op thread: float results may depend on the thread count):

    python tests/helpers/golden_worker.py OUT_DIR [--write-inputs]

Writes OUT_DIR/<case>.aec (the fresh encode) and OUT_DIR/results.json: per case, the sha256 and length
of the fresh stream, and for the committed stream (when there is one) and the fresh one the sha256 of
the decoded pixels and of the entropy-decoded symbols (or the error its decode met). `--write-inputs` first writes the synthetic
inputs that are missing under tests/expected/golden/inputs/ (only for regeneration: the test reads the
committed PNGs, never the generator).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "expected" / "golden"
INPUTS = GOLDEN / "inputs"
MANIFEST = GOLDEN / "golden.json"
#: What the decoder is given: far above any golden image, as the service's default limit is.
MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Case:
    model: str
    version: int
    input: str  # a file under INPUTS
    quality: float | None = None

    @property
    def id(self) -> str:
        quality = "" if self.quality is None else f"-q{self.quality:g}"
        return f"{self.model}-{self.version}{quality}"

    @property
    def stream_path(self) -> Path:
        return GOLDEN / f"{self.id}.aec"

    @property
    def pixels_path(self) -> Path:
        """The committed stream's decoded pixels (lossless PNG), for platforms where they are not bit-exact."""
        return GOLDEN / f"{self.id}.png"


#: Every shipped model version, the variable-rate ones at their lowest, a fractional and their highest
#: quality (the stream records the quality; fractions take the gain units' interpolation).
CASES = (
    Case("mnist", 1, "digit.png"),
    Case("mnist-anomaly-0", 2, "digit.png"),
    *(Case("natural", version, "photo.png", quality) for version in (8, 9) for quality in (1.0, 3.5, 8.0)),
    *(Case("natural", 10, "photo.png", quality) for quality in (1.0, 3.5, 10.0)),
    *(Case("natural", 11, "photo.png", quality) for quality in (1.0, 3.5, 10.0)),
    Case("cats", 1, "photo.png"),  # the 128×96 photo, resized to the model's 48×48 as the service does
)


def write_inputs() -> None:
    """The committed inputs, synthetic (the datasets are never committed): a 28×28 grey blob "digit" and
    a 128×96 photo-like colour field (1/f noise plus hard edges, bench/portable_worker.py's)."""
    import numpy as np
    from PIL import Image

    from bench.portable_worker import synthetic_images

    INPUTS.mkdir(parents=True, exist_ok=True)
    if not (INPUTS / "digit.png").exists():
        yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
        blobs = [(9.0, 11.0, 3.0), (17.0, 15.0, 4.0), (12.0, 19.0, 2.5)]
        digit = np.max([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2)) for cy, cx, s in blobs], axis=0)
        Image.fromarray(np.round(digit * 255).astype(np.uint8), mode="L").save(INPUTS / "digit.png")
    if not (INPUTS / "photo.png").exists():
        photo = synthetic_images(1, size=128, seed=19)[0][:96]
        Image.fromarray(photo, mode="RGB").save(INPUTS / "photo.png")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels_sha256(pixels) -> str:
    """Of the decoded uint8 pixels, their shape included."""
    import numpy as np

    assert pixels.dtype == np.uint8, pixels.dtype
    return _sha256(repr(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes())


def symbols_sha256(symbols: dict) -> str:
    """Of the entropy-decoded latents (name, dtype, shape and values of each): what the stream format
    and the entropy coder alone decide, before any float synthesis transform."""
    import numpy as np

    digest = hashlib.sha256()
    for name in sorted(symbols):
        value = np.ascontiguousarray(symbols[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode() + value.tobytes())
    return digest.hexdigest()


def platform() -> dict[str, str]:
    """What float results depend on besides the code: the TensorFlow build and the CPU (oneDNN picks
    kernels by instruction set). Pixels and fresh streams are bit-exact only where this matches."""
    import tensorflow as tf

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    isa = ",".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    return {"tensorflow": tf.__version__, "cpu": model, "isa": isa}


async def _decoded(model, data: bytes, pixels_path: Path) -> dict:
    """The hashes of a stream's decode (its pixels also written to `pixels_path` as PNG), or the error
    it met (reported by the test, case by case)."""
    from PIL import Image

    from service.inference import codec

    try:
        stream = codec.parse(data)
        pixels, _ = await codec.decode(model, stream, MAX_PIXELS)
        symbols = codec.unpack(model, stream)
    except Exception as exc:  # noqa: BLE001 -- a stream that no longer decodes fails its own case only
        return {"error": f"{type(exc).__name__}: {exc}"}
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(pixels_path)
    return {"pixels_sha256": pixels_sha256(pixels), "shape": list(pixels.shape),
            "symbols_sha256": symbols_sha256(symbols)}


async def run(out: Path) -> dict[str, dict]:
    from service.inference import codec, imaging
    from service.inference.registry import ModelRegistry, configure_tensorflow

    configure_tensorflow(1)
    registry = ModelRegistry(ROOT / "models_store")
    await registry.refresh()
    results: dict[str, dict] = {}
    try:
        for case in CASES:
            model = registry.resolve(case.model, case.version)
            image = imaging.open_image((INPUTS / case.input).read_bytes(), MAX_PIXELS)
            source = imaging.decode_image(image, model.card.input.channels)
            fresh = (await codec.encode(model, source, quality=case.quality)).stream
            (out / f"{case.id}.aec").write_bytes(fresh)
            result = {"stream_sha256": _sha256(fresh), "bytes": len(fresh),
                      "fresh": await _decoded(model, fresh, out / f"{case.id}.fresh.png")}
            if case.stream_path.exists():
                result["committed"] = await _decoded(model, case.stream_path.read_bytes(),
                                                     out / f"{case.id}.committed.png")
            results[case.id] = result
    finally:
        await registry.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--write-inputs", action="store_true")
    args = parser.parse_args()
    if args.write_inputs:
        write_inputs()
    results = asyncio.run(run(args.out))
    (args.out / "results.json").write_text(json.dumps({"platform": platform(), "cases": results}, indent=1))


def environment() -> dict[str, str]:
    """The worker's process environment: CPU only, oneDNN on, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEC_")}
    return env | {"CUDA_VISIBLE_DEVICES": "", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                  "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")}


if __name__ == "__main__":
    main()
