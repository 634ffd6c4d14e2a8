"""Write `examples/digit-<d>.png`: the first MNIST test image of each digit at t10k index >= 8000.

Those indices are the held-out part of the split the shipped models were trained on (`--split 8000`),
so no shipped model saw them. The digits are not committed (MNIST is a dataset, not project code): they
come from an IDX folder (`--idx-dir`, default `$AEC_DATASETS/mnist-t10k`, else `../shared/datasets/
mnist-t10k` next to the repository) or, where there is none, from Keras' MNIST loader (downloaded once
and cached in ~/.keras/datasets; the same t10k order).

    python examples/make_digits.py            # what `make examples` runs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1

FIRST_HELD_OUT = 8000


def default_idx_dir() -> Path:
    datasets = os.environ.get("AEC_DATASETS")
    return (Path(datasets) if datasets else ROOT.parent / "shared" / "datasets") / "mnist-t10k"


def test_split(idx_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST t10k images [N, 28, 28] uint8 and labels [N]: from the IDX folder, else Keras' loader."""
    if (idx_dir / "t10k-images-idx3-ubyte.gz").exists():
        from training.data import read_idx

        return read_idx(idx_dir / "t10k-images-idx3-ubyte.gz"), read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")
    import keras

    try:
        _, (images, labels) = keras.datasets.mnist.load_data()
    except Exception as exc:  # noqa: BLE001 - keras raises a bare Exception when the download fails
        raise SystemExit(f"no MNIST IDX folder at {idx_dir} and the download failed ({exc}); "
                         "point --idx-dir or AEC_DATASETS at a folder holding mnist-t10k") from None
    return images, labels


def held_out_digits(images: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """digit -> its first image at index >= FIRST_HELD_OUT."""
    found: dict[int, np.ndarray] = {}
    for index in range(FIRST_HELD_OUT, len(labels)):
        found.setdefault(int(labels[index]), images[index])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx-dir", type=Path, default=default_idx_dir())
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for digit, pixels in sorted(held_out_digits(*test_split(args.idx_dir)).items()):
        Image.fromarray(np.asarray(pixels, np.uint8)).save(args.out / f"digit-{digit}.png", optimize=True)
    print(f"wrote digit-0.png ... digit-9.png into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
