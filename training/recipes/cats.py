"""The kitten write-up's data: `cats/train` as 48×48 RGB images in one IDX file, for `idx:` training.

    python -m training.recipes.cats prepare ../shared/datasets/cats/train artifacts/cats48

Each photo becomes what the service would feed a 48×48 model for it: EXIF orientation applied, RGB,
the whole photo resized to 48×48 by Pillow's bicubic filter (aspect not kept, nothing cropped), 8 bits
(service/inference/imaging.py; tests/training/test_cats_recipe.py checks that they are the same pixels).
So the held-out cats that calibrate the threshold look exactly like cat photos posted to the service.

Order: by the number in `cat.N.jpg` (0–999, 1200–3999: 3,800 photos), written to `files.txt` one name
a line in IDX order. With `--split 3000` the first 3,000 (cat.0–cat.999, cat.1200–cat.3199) are
train/validation (`--val-fraction` of them, drawn by `--seed`, validate and calibrate) and the last 800
(cat.3200–cat.3999) are the test set, never seen in training or calibration.

    python -m training.recipes.cats splits artifacts/cats48 --split 3000 --val-fraction 0.1 --seed 0 \
        --json models_store/cats/1/splits.json

lists which photos a run with those flags trained on, validated and calibrated on, and was tested on
(the draw `training.data` makes for an `idx:` dataset cut by `--split`).

`photos_at(paths, size)` gives other photos (McMaster, Set14: the anomalies of bench/cats.py) the same
treatment.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
FILES_LIST = "files.txt"
SIZE = 48


def model_pixels(path: Path, size: int = SIZE) -> np.ndarray:
    """uint8 [size, size, 3]: the photo as the service sizes it for a fixed `size`×`size` RGB model."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
        return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def cat_number(path: Path) -> int:
    found = re.fullmatch(r"cat\.(\d+)", path.stem)
    if not found:
        raise ValueError(f"{path.name} is not named cat.N.jpg")
    return int(found.group(1))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (gzipped when the name ends in .gz) of a uint8 array of any rank."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


def photos_at(paths: list[Path], size: int = SIZE) -> np.ndarray:
    """float32 [N, size, size, 3] in [0, 1] of these photos, as `model_pixels` sizes them."""
    return np.stack([model_pixels(p, size) for p in paths]).astype(np.float32) / 255.0


def prepare(source: Path, out: Path, size: int = SIZE) -> list[str]:
    paths = sorted((p for p in source.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"}), key=cat_number)
    if not paths:
        raise ValueError(f"no cat.N.jpg in {source}")
    out.mkdir(parents=True, exist_ok=True)
    pixels = np.stack([model_pixels(p, size) for p in paths])
    write_idx(out / IMAGES_FILE, pixels)
    names = [p.name for p in paths]
    (out / FILES_LIST).write_text("\n".join(names) + "\n")
    return names


def split_files(names: list[str], split: int, val_fraction: float, seed: int) -> dict[str, list[str]]:
    """The file names in each split of `--dataset idx:<prepared> --split N --val-fraction F --seed S`:
    positions N on are the test set; of the first N, training.data draws round(F · N) for validation
    (which also calibrates the anomaly threshold) with numpy's generator of the seed."""
    if not 0 < split < len(names):
        raise ValueError(f"--split {split} must be between 1 and {len(names) - 1}")
    order = np.random.default_rng(seed).permutation(split)
    n_val = max(1, round(split * val_fraction))
    return {"train": [names[i] for i in sorted(order[n_val:])],
            "validation": [names[i] for i in sorted(order[:n_val])], "test": names[split:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.cats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write SOURCE's cat.N.jpg as one IDX file of SIZE×SIZE RGB into OUT")
    prep.add_argument("source", type=Path)
    prep.add_argument("out", type=Path)
    prep.add_argument("--size", type=int, default=SIZE)
    listing = sub.add_parser("splits", help="which photos of a prepared folder are train / validation / test")
    listing.add_argument("prepared", type=Path)
    listing.add_argument("--split", type=int, required=True)
    listing.add_argument("--val-fraction", type=float, default=0.1)
    listing.add_argument("--seed", type=int, default=0)
    listing.add_argument("--json", type=Path, help="write the three lists here")
    args = parser.parse_args(argv)
    if args.command == "splits":
        names = (args.prepared / FILES_LIST).read_text().split()
        found = split_files(names, args.split, args.val_fraction, args.seed)
        print(", ".join(f"{k}: {len(v)}" for k, v in found.items()))
        if args.json:
            args.json.write_text(json.dumps({"source": str(args.prepared), "split": args.split,
                                             "val_fraction": args.val_fraction, "seed": args.seed, **found},
                                            indent=0) + "\n")
        return 0
    names = prepare(args.source, args.out, args.size)
    print(f"{len(names)} photos ({names[0]} … {names[-1]}) → {args.out / IMAGES_FILE} "
          f"[{len(names)}, {args.size}, {args.size}, 3], order in {args.out / FILES_LIST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
