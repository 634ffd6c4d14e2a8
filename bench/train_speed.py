"""Training steps per second of one architecture, float32 against mixed precision, side by side.

    python bench/train_speed.py --model codec_cc --model-args '{"num_filters": 96, ...}' \
        --precision float32,bfloat16 --batch 8 --crop 128 --steps 15 --rounds 2

Each round builds a fresh model per precision (the same `enable_mixed_precision` as
`python -m training train --mixed-precision`), warms its traced step up and times `--steps` steps on one
fixed batch of random crops; the precisions alternate within each round, so a machine that gets busier
slows all of them alike. The input pipeline is left out on purpose: it is the same for every precision.
It also prints each precision's deterministic (rounded) rate and PSNR at the lowest and highest rate
level from float32 weights (`--snapshot`, a training.snapshot folder), which is what a precision costs
the forward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1


def build(architecture: str, model_args: dict, precision: str, sample, snapshot: dict | None):
    from training import distribute
    from training.models.registry import get_architecture

    model = get_architecture(architecture)(input_shape=(None, None, sample.shape[-1]), **model_args)
    if precision != "float32":
        distribute.enable_mixed_precision(model, precision)
    model(sample[:1])
    if snapshot is not None:
        from training.snapshot import set_named_weights

        set_named_weights(model, snapshot, architecture)
    return model


def steps_per_second(model, batch, steps: int) -> float:
    import keras

    from training.train import make_train_step

    step = make_train_step(model, keras.optimizers.Adam(1e-5, global_clipnorm=1.0))
    for _ in range(3):
        step(batch)
    started = time.perf_counter()
    for _ in range(steps):
        losses = step(batch)
    float(losses["loss"])
    return steps / (time.perf_counter() - started)


def forward_quality(model, images) -> list[tuple[int, float, float]]:
    """(level, bpp, PSNR) of the deterministic (rounded) forward pass at the lowest and highest level."""
    levels = len(getattr(model, "lmbdas", [None]))
    found = []
    for level in sorted({0, levels - 1}):
        if levels > 1:
            model.set_rate_level(level)
        losses = model.compute_losses(images, training=False)
        found.append((level + 1, float(losses["bpp"]), 10 * np.log10(1 / float(losses["mse"]))))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="codec_cc")
    parser.add_argument("--model-args", default="{}")
    parser.add_argument("--precision", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--snapshot", type=Path, help="float32 weights for the forward-quality columns")
    parser.add_argument("--images", type=Path, help="a folder of photos to crop the batch from (else noise)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from training.data import IMAGE_SUFFIXES, load_image
    from training.gpu import snapshot_files

    if args.images:
        paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.batch]
        crops = [load_image(p)[: args.crop, : args.crop] for p in paths]
        batch = np.stack([c for c in crops if c.shape[:2] == (args.crop, args.crop)])
    else:
        batch = np.random.default_rng(0).random((args.batch, args.crop, args.crop, 3), np.float32)
    batch = tf.constant(batch)
    snapshot = snapshot_files.read(args.snapshot)[0] if args.snapshot else None
    model_args = json.loads(args.model_args)
    precisions = args.precision.split(",")
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    quality: dict[str, list] = {}
    for _ in range(args.rounds):
        for precision in precisions:
            model = build(args.model, model_args, precision, batch, snapshot)
            if snapshot is not None and precision not in quality:
                quality[precision] = forward_quality(model, batch)
            rates[precision].append(steps_per_second(model, batch, args.steps))
    base = np.median(rates[precisions[0]])
    print(f"{args.model}, batch {len(batch)} of {args.crop}², {args.steps} steps × {args.rounds} rounds")
    print("| precision | steps/s (median) | rounds | vs " + precisions[0] + " |"
          + (" forward (level: bpp / PSNR) |" if quality else ""))
    print("|---|---|---|---|" + ("---|" if quality else ""))
    for precision in precisions:
        median = float(np.median(rates[precision]))
        row = (f"| {precision} | {median:.2f} | {', '.join(f'{r:.2f}' for r in rates[precision])} | "
               f"{median / base:.2f}× |")
        if quality:
            row += " " + ", ".join(f"{lv}: {b:.4f} / {q:.2f} dB" for lv, b, q in quality[precision]) + " |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
