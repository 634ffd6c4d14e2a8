"""MS-SSIM's cost: the service's two-pass window (`service.inference.msssim`) next to
`tf.image.ssim_multiscale`, on the same images in one run, with the values they give.

    python bench/msssim.py                        # 0.4 and 3 MP, a McMaster photo against its JPEG
    python bench/msssim.py --sizes 0.25,1,2 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages importable
    sys.path.insert(0, str(ROOT))
from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1

import numpy as np
from PIL import Image

from bench.photos import DEFAULT_IMAGE, photo_png


def best_of(fn, repeats: int) -> tuple[float, float, float]:
    """(best wall seconds, CPU seconds of that run, the value) over `repeats` calls after one warm-up."""
    fn()
    best = (float("inf"), 0.0, 0.0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        elapsed = time.perf_counter() - wall
        if elapsed < best[0]:
            best = (elapsed, time.process_time() - cpu, value)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a photo, or a folder (its first image)")
    parser.add_argument("--sizes", default="0.4,3", help="megapixels, comma-separated (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell, best kept (default %(default)s)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from service.inference import msssim

    print("| MP | implementation | s/MP wall | CPU s/MP | MS-SSIM |\n|---|---|---|---|---|")
    for mp in (float(s) for s in args.sizes.split(",") if s):
        source = Image.open(io.BytesIO(photo_png(args.image, mp))).convert("RGB")
        buffer = io.BytesIO()
        source.save(buffer, format="JPEG", quality=30)
        a = np.asarray(source, np.float32) / 255
        b = np.asarray(Image.open(buffer), np.float32) / 255
        pixels = a.shape[0] * a.shape[1] / 1e6
        rows = {"tf.image.ssim_multiscale": lambda a=a, b=b: float(tf.image.ssim_multiscale(a, b, max_val=1.0)),
                "service (two 1-D passes)": lambda a=a, b=b: msssim.ms_ssim(a, b)}
        results = {name: best_of(fn, args.repeats) for name, fn in rows.items()}
        for name, (wall, cpu, value) in results.items():
            print(f"| {pixels:.2f} | {name} | {wall / pixels:.3f} | {cpu / pixels:.3f} | {value:.6f} |")
        (lib, _, _), (ours, _, _) = results.values()
        print(f"| {pixels:.2f} | ratio | {lib / ours:.1f}× faster | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
