"""A tiny `--anomaly-score complexity` model, trained and exported by the real CLI in seconds.

The dataset is an IDX file (idx:) of 16×16 RGB images with labels: class 0 ("normal") are smooth colour
fields of varied complexity (coarse grids of 2–6 cells, a little noise of varied strength, so their PNG
sizes spread), class 1 are stripes and noise. Positions 0–149 are train/validation and hold both classes
(`--classes 0` keeps the normal ones, so the line must come from normal validation images only), 150–199
the test set.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 16
SPLIT = 150
VAL_FRACTION = 0.3
NAME = "cx"


@dataclass(frozen=True)
class ComplexityStore:
    store: Path
    version_dir: Path
    data: Path
    spec: str  # the --dataset spec


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 16, 16, 3] and labels (a fifth are class 1)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    labels = (rng.random(n) < 0.2).astype(np.uint8)
    yy = np.arange(SIZE)[:, None, None]
    for i in range(n):
        if labels[i]:
            stripes = (np.sin(yy * rng.uniform(1.5, 3.0) + rng.uniform(0, 6)) > 0) * rng.uniform(0.5, 1.0, 3)
            pixels = np.clip(stripes + rng.normal(0, 0.25, (SIZE, SIZE, 3)), 0, 1)
        else:
            cells = int(rng.integers(2, 7))
            coarse = rng.uniform(0, 1, (1, cells, cells, 3)).astype(np.float32)
            smooth = tf.image.resize(coarse, (SIZE, SIZE), method="bilinear").numpy()[0]
            pixels = np.clip(smooth + rng.normal(0, rng.uniform(0.0, 0.06), smooth.shape), 0, 1)
        out[i] = np.round(pixels * 255).astype(np.uint8)
    return out, labels


def build(root: Path) -> ComplexityStore:
    from training.cli import main
    from training.recipes.cats import write_idx

    data = root / "data"
    data.mkdir(parents=True)
    pixels, labels = images(200, seed=3)
    write_idx(data / "t10k-images-idx3-ubyte.gz", pixels)
    write_idx(data / "t10k-labels-idx1-ubyte.gz", labels)
    spec = f"idx:{data}"
    store = root / "store"
    argv = ["train", "--model", "conv_ae", "--dataset", spec, "--split", str(SPLIT), "--classes", "0",
            "--val-fraction", str(VAL_FRACTION), "--model-args", '{"filters": [4], "latent_channels": 2}',
            "--epochs", "1", "--batch-size", "16", "--anomaly-score", "complexity", "--out", str(store),
            "--name", NAME, "--log-dir", str(root / "runs"), "--no-progress", "--skip-bitstreams"]
    with contextlib.redirect_stdout(io.StringIO()):
        main(argv)
    return ComplexityStore(store, store / NAME / "1", data, spec)
