"""Peak memory of encoder effort (`?effort=`): what one refinement adds to a server's resident memory, by
image size, next to a plain encode of the same image.

    python bench/effort_memory.py                          # natural, 0.5, 1 and 2 MP, effort 1
    python bench/effort_memory.py --sizes 2 --effort 1 --model natural

A refined image is one whole call (never tiled) with a backward pass through the model, so its working
memory follows the image; `AEC_EFFORT_MAX_PIXELS` (docs/operators.md) is sized from this table. Each size
runs in a fresh subprocess (peak RSS only grows within a process) that builds the registry as the service
does (the server's malloc setting and TensorFlow thread budget), over a store holding only `--model`, and
reads the peak resident set (`ru_maxrss`) after loading, after a plain encode and after a refined one.
The steps run inside one `tf.while_loop`, so the peak does not grow with the effort, only the time.
The photo is `--image` (default: the first McMaster photo) resized with Lanczos to each size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages importable
    sys.path.insert(0, str(ROOT))

DEFAULT_IMAGE = ROOT.parent / "shared" / "datasets" / "natural" / "McMaster" / "1.png"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _photo(path: Path, megapixels: float):
    """`path` resized as bench/photos.py resizes its photos; without it (no datasets here) a drawn image
    resized the same way: memory does not depend on the content."""
    import numpy as np
    from PIL import Image

    from bench.photos import resized_photo

    if path.is_file():
        image = Image.open(path).convert("RGB")
    else:
        image = Image.fromarray((np.random.default_rng(0).random((256, 384, 3)) * 255).astype("uint8"))
    return np.asarray(resized_photo(image, megapixels))


async def _child(models_dir: Path, model_name: str, megapixels: float, effort: int, image: Path) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from service.app.config import Settings
    from service.app.server import tune_allocator
    from service.inference import codec, imaging
    from service.inference.registry import ModelRegistry, configure_tensorflow, serves_any_size

    tune_allocator()
    with tempfile.TemporaryDirectory() as store:
        (Path(store) / model_name).symlink_to(models_dir.resolve() / model_name, target_is_directory=True)
        settings = Settings(_env_file=None, models_dir=Path(store), default_model=model_name)
        configure_tensorflow(settings.intra_op_threads(serves_any_size(settings.models_dir)))
        registry = ModelRegistry(settings.models_dir, default_model=model_name,
                                 executor=ThreadPoolExecutor(settings.inference_threads))
        await registry.refresh()
        model = registry.resolve(model_name)
        pixels = _photo(image, megapixels)
        source = imaging.SourceImage(pixels, 3, "PNG")
        row: dict = {"model": f"{model.name}/{model.version}", "width": pixels.shape[1], "height": pixels.shape[0],
                     "megapixels": pixels.shape[0] * pixels.shape[1] / 1e6, "effort": effort,
                     "loaded_mib": _peak_mib()}
        started = time.perf_counter()
        plain = await codec.encode(model, source, settings.tiling)
        row |= {"plain_s": time.perf_counter() - started, "plain_peak_mib": _peak_mib(), "plain_bytes": len(plain.stream)}
        started = time.perf_counter()
        refined = await codec.encode(model, source, settings.tiling, effort=effort, effort_max_pixels=1 << 30)
        row |= {"refined_s": time.perf_counter() - started, "refined_peak_mib": _peak_mib(),
                "refined_bytes": len(refined.stream)}
        await registry.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models_store")
    parser.add_argument("--model", default="natural")
    parser.add_argument("--sizes", default="0.5,1,2", help="megapixels, comma-separated")
    parser.add_argument("--effort", type=int, default=1)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)  # one size, in this process
    args = parser.parse_args(argv)
    if args.child is not None:
        from service.process_env import configure_tensorflow_env

        configure_tensorflow_env()
        print(json.dumps(asyncio.run(_child(args.models_dir, args.model, args.child, args.effort, args.image))))
        return 0
    rows = []
    for size in [float(s) for s in args.sizes.split(",") if s.strip()]:
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--model", args.model,
                              "--effort", str(args.effort), "--image", str(args.image), "--models-dir", str(args.models_dir)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"peak resident memory (MiB), {rows[0]['model']}, effort {args.effort}, one image at a time, "
          "each size in a fresh process")
    print("| image | MP | after load | plain encode (+) | refined encode (+ over plain) | plain s | refined s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']}x{r['height']} | {r['megapixels']:.2f} | {r['loaded_mib']:.0f} | "
              f"{r['plain_peak_mib']:.0f} (+{r['plain_peak_mib'] - r['loaded_mib']:.0f}) | "
              f"{r['refined_peak_mib']:.0f} (+{r['refined_peak_mib'] - r['plain_peak_mib']:.0f}) | "
              f"{r['plain_s']:.2f} | {r['refined_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
