"""Rate–distortion benchmark: our codec through the service's own code path vs Pillow's JPEG, WebP, AVIF.

    python bench/rd.py path/to/McMaster --models natural --plot artifacts/rd.png --json artifacts/rd.json

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
pixels and channels. MS-SSIM on the same pair by the service's measure (`service/inference/msssim.py`:
tf.image.ssim_multiscale with its defaults), for images of at least 161 px on a side; it is plotted and
integrated in dB, -10·log10(1 − MS-SSIM). It costs ~4.5 CPU-seconds per megapixel, far more than a JPEG
encode, so ours is measured at every operating point but each classic sweep only at every
`--ms-ssim-stride`-th quality and its last (default 5: 21 of JPEG's 100 points); cached with the sweep.
`--ms-ssim-stride 0` skips it.

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
- BD-rate (`bench/bdrate.py`, PCHIP by default) of each codec against JPEG, WebP and AVIF, on the MEAN curves
  (per quality setting / per operating point: mean bpp and mean PSNR over the images), over the whole
  PSNR range the two curves share, and over 0.25–1.0 bpp (the PSNR interval where both curves spend
  0.25 to 1.0 bpp). Negative = fewer bits than the anchor for the same PSNR. The per-image BD-rates
  averaged over images are printed below the table and stored in the JSON.
- MS-SSIM table: MS-SSIM in dB (and as is) at each target bpp on the mean MS-SSIM curves (per setting, the
  mean over the images that have a value), and the BD-rate over MS-SSIM in dB against each classic codec.
- enc/dec s/MP: wall-clock seconds per megapixel, median over images (ours: also over operating
  points, per operating point in the second table). Ours: `codec.encode` (pixels → stream bytes) and
  parse + resolve + `codec.decode` (bytes → pixels), image file decode/encode excluded; classic:
  Pillow save / open+load at quality `--speed-quality`, measured fresh in each run (never cached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages importable
    sys.path.insert(0, str(ROOT))
from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1

import numpy as np
from PIL import Image

from bench.rdlib.classic import (
    SweepCache,
    classic_codecs,
    ms_ssim_qualities,
    parse_qualities,
    sweep,
    time_classic,
)
from bench.rdlib.curves import BD_RANGE, summarize
from bench.rdlib.images import BenchImage, list_images, load
from bench.rdlib.ours import run_ours, select_models
from bench.rdlib.tables import plot, print_tables

TARGETS = (0.125, 0.25, 0.5, 1.0)
UNLIMITED_PIXELS = 1 << 62


# ---- main ----------------------------------------------------------------------------------------------
def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aecodec" / "rd"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="folders of images (or image files)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models_store",
                        help="the models store (default: this repository's models_store/)")
    parser.add_argument("--models", help="comma-separated names, globs or prefixes of models (one operating point "
                        "each, newest version); default: every any-size model in --models-dir")
    parser.add_argument("--our-qualities", type=lambda s: [float(x) for x in s.split(",")],
                        help="variable-rate models: the qualities to sweep, e.g. 1,2,3.5 (default: the model's "
                             "range in steps of 0.5)")
    parser.add_argument("--our-efforts", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                        help="comma-separated encoder efforts (?effort=) for models that have the setting: one curve "
                             "each (default 0)")
    parser.add_argument("--codecs", default="jpeg,webp,avif", help="classic codecs to compare (jpeg,webp,avif)")
    parser.add_argument("--qualities", type=parse_qualities, default=parse_qualities("1-100"),
                        help="JPEG/WebP quality sweep (default 1-100; forms: 1-100, 1-100:5, 10,50,90)")
    parser.add_argument("--avif-qualities", type=parse_qualities, default=parse_qualities("1-100:3"),
                        help="AVIF quality sweep (default 1-100:3, AVIF encodes are slow)")
    parser.add_argument("--avif-speed", type=int, default=6, help="libavif speed 0 (slowest, best) .. 10 (default 6)")
    parser.add_argument("--speed-quality", type=int, default=75, help="classic codecs' quality for the timing columns")
    parser.add_argument("--targets", type=lambda s: [float(x) for x in s.split(",")], default=list(TARGETS),
                        metavar="BPP,...", help="the bit rates the tables read PSNR and MS-SSIM at (default "
                        + ",".join(f"{t:g}" for t in TARGETS) + ")")
    parser.add_argument("--bd-method", choices=("pchip", "cubic"), default="pchip",
                        help="BD-rate fit of log-rate against PSNR: pchip (piecewise cubic Hermite, as the JVET "
                             "common-test-condition sheets; the default) or cubic (Bjøntegaard's least-squares "
                             "polynomial, 4 points or more)")
    parser.add_argument("--max-pixels", type=int, default=0,
                        help="pixel limit passed to the service code, images over it are skipped (default 0: none; "
                             "the service's own default, AEC_MAX_PIXELS, is 4096²)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="threads running the classic codecs' quality sweeps in parallel, one (image, codec) "
                             "each (default: the CPU count, at most 4); our codec runs in one")
    parser.add_argument("--ms-ssim-stride", type=int, default=5, metavar="N",
                        help="measure MS-SSIM at every N-th quality of each classic sweep and its last, and at every "
                             "operating point of ours (default 5; 0: no MS-SSIM)")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="classic sweep cache folder (default: $XDG_CACHE_HOME/aecodec/rd, else "
                             "~/.cache/aecodec/rd)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the sweep cache")
    parser.add_argument("--plot", type=Path, help="write the mean curves as a PNG")
    parser.add_argument("--plot-max-bpp", type=float, default=2.0, help="right end of the plot's bpp axis (default 2)")
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
    ours = asyncio.run(run_ours(points, images, max_pixels, log, args.our_qualities, args.ms_ssim_stride > 0,
                            args.our_efforts))
    if not ours.models:
        raise SystemExit("rd.py: no model could be loaded")

    codecs = classic_codecs([c.strip() for c in args.codecs.split(",") if c.strip()], args.avif_speed, log)
    cache = SweepCache(None if args.no_cache else args.cache)
    classic: dict[str, dict[str, list[dict]]] = {c.key: {} for c in codecs}
    sweeps = {c.key: args.avif_qualities if c.key == "avif" else args.qualities for c in codecs}
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {
            (c.key, str(image.path)): pool.submit(
                sweep, image, c, sweeps[c.key], cache, ms_ssim_qualities(sweeps[c.key], args.ms_ssim_stride))
            for image in images for c in codecs
        }
        for (key, path), future in futures.items():
            classic[key][path] = future.result()
    log(f"classic sweeps: {time.perf_counter() - started:.1f} s")
    speeds = {c.key: [time_classic(image, c, args.speed_quality) for image in images] for c in codecs}

    summary = summarize(ours.models, ours.points, classic, {c.key: c.label for c in codecs}, speeds, args.targets,
                        args.bd_method)
    rows, means, per_image, labels = summary.rows, summary.means, summary.per_image, summary.labels

    folders = ", ".join(args.dirs)
    print_tables(summary, ours, folders=folders, n_images=len(images), megapixels=megapixels, targets=args.targets,
                 bd_method=args.bd_method, settings_note="; ".join(f"{c.label}: {c.settings_id}" for c in codecs),
                 speed_quality=args.speed_quality)

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
            "mean_curves": means, "ms_ssim_mean_curves": summary.ms_ssim_means, "ms_ssim_stride": args.ms_ssim_stride,
            "table": rows, "skipped": ours.skipped, "unreadable": unreadable,
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
