"""Training crops of a `folder:` spec, packed small enough to travel to the lent GPU machine.

    python -m training.gpu.pack "<folder spec>" <out dir> [--crop 192] [--max-mib 20] [--seed 0]

The GPU machine takes a working tree of at most 64 MiB, the repository included, so the whole training
set (about 60 MiB of PNG and more of JPEG) cannot go. What goes is a sample of it, lossless: random
crops of the CPU run's training images (not its validation or calibration images), drawn as
`training.data` draws its training crops (a folder by its weight, then an image of that folder
uniformly, JPEG sources halved first), each a lossless WebP (about 10 bits per pixel on these
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

JPEG_SUFFIXES = {".jpg", ".jpeg"}
INDEX = "pack.json"


def _images(spec: str, val_fraction: float, seed: int) -> list[tuple[str, float, list[Path]]]:
    """Each folder's training images: the CPU run's validation and calibration images (drawn by its
    --val-fraction and --seed, with a --test-dataset given, as the recipe runs) stay out of the pack."""
    from training.data import folder_listing, folder_parts, held_out_count, split_order

    parts = folder_parts(spec.removeprefix("folder:"))
    listings = [folder_listing(part.path, part.pick) for part in parts]
    everything = [path for listing in listings for path in listing]
    held = {everything[i] for i in split_order(len(everything), seed)[:held_out_count(len(everything), val_fraction)]}
    folders = []
    for part, listing in zip(parts, listings):
        found = [path for path in listing if path not in held]
        if not found:
            raise SystemExit(f"no training images in {part}")
        folders.append((str(part), part.weight, found))
    return folders


def _load(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
        return img.reduce(2) if path.suffix.lower() in JPEG_SUFFIXES and min(img.size) >= 64 else img.copy()


def pack(spec: str, out: Path, crop: int = 192, max_mib: float = 20.0, seed: int = 0, min_side: int = 128,
         val_fraction: float = 0.1, split_seed: int = 0) -> dict:
    """Lossless crops of the spec's training images into `out` until `max_mib` is reached; the index.
    An image narrower than `crop` gives a crop as wide as it is (at least `min_side`, the training
    crop; smaller images are never drawn), so that small photos keep their folder's share."""
    folders = _images(spec, val_fraction, split_seed)
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
        if path not in cache:
            cache[path] = _load(path)
        img = cache[path]
        w, h = min(crop, img.width), min(crop, img.height)
        if w < min_side or h < min_side:
            paths.remove(path)  # too small for a training crop (training.data drops it too)
            if not paths:
                raise SystemExit(f"no image of {name} is at least {min_side}x{min_side}")
            continue
        x, y = int(rng.integers(img.width - w + 1)), int(rng.integers(img.height - h + 1))
        buffer = io.BytesIO()
        img.crop((x, y, x + w, y + h)).save(buffer, "WEBP", lossless=True, method=4)
        data = buffer.getvalue()
        if total + len(data) > budget:
            misses += 1  # a smaller crop may still fit; stop after 20 that did not
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
