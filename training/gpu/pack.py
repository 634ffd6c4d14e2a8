"""Training crops of a `folder:` spec, packed small enough to travel to the lent GPU machine.

    python -m training.gpu.pack "<folder spec>" <out dir> [--crop 192] [--max-mib 20] [--seed 0]

The GPU machine takes a working tree of at most 64 MiB, the repository included, so the whole training
set (about 60 MiB of PNG and more of JPEG) cannot go. What goes is a sample of it, lossless: random
crops drawn as `training.data` draws its training crops (a folder by its weight, then an image of that
folder uniformly, JPEG sources halved first), each a lossless WebP (about 10 bits per pixel on these
photos, 60% of PNG), until the budget is spent. Lossless because high-quality JPEG is not good enough
here: at quality 90 CBSD68 photos come back at 35.5 to 42 dB, under the 36 dB the codec's top level
has to learn to keep. The GPU run then crops its training crops (smaller than these) from the pack,
all crops equally likely: the folders' weights are already in how many crops each got.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}
INDEX = "pack.json"


def _images(spec: str) -> list[tuple[str, float, list[Path]]]:
    from training.data import folder_parts

    folders = []
    for part in folder_parts(spec.removeprefix("folder:")):
        found = sorted(p for p in part.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[part.pick]
        if not found:
            raise SystemExit(f"no images in {part}")
        folders.append((str(part), part.weight, found))
    return folders


def _load(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
        return img.reduce(2) if path.suffix.lower() in JPEG_SUFFIXES and min(img.size) >= 64 else img.copy()


def pack(spec: str, out: Path, crop: int = 192, max_mib: float = 20.0, seed: int = 0, min_side: int = 128) -> dict:
    """Lossless crops of the spec's training images into `out` until `max_mib` is reached; the index.
    An image narrower than `crop` gives a crop as wide as it is (at least `min_side`, the training
    crop; smaller images are never drawn), so that small photos keep their folder's share."""
    folders = _images(spec)
    weights = np.asarray([w for _, w, _ in folders], np.float64)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.webp"):
        old.unlink()
    cache: dict[Path, Image.Image] = {}
    entries, total, budget, misses = [], 0, int(max_mib * 2**20), 0
    while misses < 20:
        f = int(rng.choice(len(folders), p=weights / weights.sum()))
        name, _, paths = folders[f]
        path = paths[int(rng.integers(len(paths)))]
        img = cache.setdefault(path, _load(path))
        w, h = min(crop, img.width), min(crop, img.height)
        if w < min_side or h < min_side:
            paths.remove(path)  # as training.data does: too small for a training crop
            if not paths:
                raise SystemExit(f"no image of {name} is at least {min_side}x{min_side}")
            continue
        x, y = int(rng.integers(img.width - w + 1)), int(rng.integers(img.height - h + 1))
        buffer = io.BytesIO()
        img.crop((x, y, x + w, y + h)).save(buffer, "WEBP", lossless=True, method=4)
        data = buffer.getvalue()
        if total + len(data) > budget:
            misses += 1  # a smaller crop may still fit; stop after a run of ones that do not
            continue
        file = f"{len(entries):05d}.webp"
        (out / file).write_bytes(data)
        entries.append({"file": file, "folder": name, "source": path.name, "x": x, "y": y, "width": w, "height": h})
        total += len(data)
    index = {"spec": spec, "crop": crop, "seed": seed, "bytes": total, "crops": entries,
             "per_folder": {name: sum(e["folder"] == name for e in entries) for name, _, _ in folders}}
    (out / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.gpu.pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the run's --dataset, folder:<dir>[<slice>][=<weight>],...")
    parser.add_argument("out", type=Path)
    parser.add_argument("--crop", type=int, default=192, help="side of each packed crop (training crops are smaller)")
    parser.add_argument("--max-mib", type=float, default=20.0, help="the pack's size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    index = pack(args.spec, args.out, args.crop, args.max_mib, args.seed)
    print(f"{len(index['crops'])} crops of {args.crop}² ({index['per_folder']}), {index['bytes'] / 2**20:.1f} MiB "
          f"in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
