"""A training checkpoint's rate–distortion curve, without exporting: how far a long run has come.

    python bench/checkpoint_rd.py artifacts/ckpt/codec-v2 --model codec_cc --model-args '{...}' \\
        ../shared/datasets/natural/McMaster [--limit 6] [--levels 0,4,9]

Restores the newest checkpoint of a training run into the architecture, and measures every rate level
on whole images (padded to the size multiple, cropped back) in the model's evaluation state: latents
rounded as the coder rounds them, rates as ideal code lengths under the float entropy model (what
`compute_losses(training=False)` reports; real streams add a few bytes per latent and the integer
parameters move rates by a fraction of a percent). Prints mean bpp and mean PSNR per level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("images", help="a folder of images, or a slice of its sorted images: DIR[1::2]")
    parser.add_argument("--model", default="codec_cc")
    parser.add_argument("--model-args", type=json.loads, default={})
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument("--levels", help="comma-separated 0-based levels (default: all)")
    parser.add_argument("--unquantized", action="store_true",
                        help="also the PSNR of g_s(g_a(x)) with the level's gains and no rounding: what the "
                             "transforms alone can reconstruct, the ceiling of that level's PSNR")
    parser.add_argument("--average", action="store_true",
                        help="measure the checkpoint's weight average (a run with --ema-decay) instead of its "
                             "last step's weights")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from contract.sizing import pad_to_multiple
    from training.data import folder_listing, load_image, split_pick
    from training.models.registry import get_architecture
    from training.train import trained_variables

    model = get_architecture(args.model)(input_shape=(None, None, 3), **args.model_args)
    model(tf.zeros([1, model.size_multiple, model.size_multiple, 3]))
    latest = tf.train.latest_checkpoint(str(args.checkpoint_dir))
    if latest is None:
        raise SystemExit(f"no checkpoint in {args.checkpoint_dir}")
    import keras

    step = tf.Variable(0, dtype=tf.int64)
    optimizer = keras.optimizers.Adam()  # some weights are reachable only through it (training.train.fit)
    trained = trained_variables(model)
    optimizer.build(trained)
    tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                        variables=list(model.variables)).read(latest).expect_partial()
    which = ""
    if args.average:
        from training.averaging import read_average

        try:
            which = f", weight average of {read_average(latest, trained)} updates"
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
    folder, pick = split_pick(args.images)
    paths = folder_listing(folder, pick)
    paths = paths[: args.limit] if args.limit else paths
    images = [load_image(p) for p in paths]
    levels = [int(v) for v in args.levels.split(",")] if args.levels else list(range(model.num_levels))

    @tf.function(autograph=False, reduce_retracing=True)
    def losses(x):
        return model.compute_losses(x, training=False)

    print(f"{latest} (step {int(step.numpy())}{which}), {len(images)} images of {args.images}")
    extra = " PSNR unquantised |" if args.unquantized else ""
    print(f"| level | λ | mean bpp | mean PSNR |{extra}\n|---|---|---|---|{'---|' if extra else ''}")
    for level in levels:
        model.set_rate_level(level)
        bpp, psnr, ceiling = [], [], []
        for image in images:
            h, w = image.shape[:2]
            padded = pad_to_multiple(image[None], model.size_multiple)
            out = losses(tf.constant(padded))
            # the padded image's bits over the original pixels (what a stream of the image costs)
            bpp.append(float(out["bpp"]) * padded.shape[1] * padded.shape[2] / (h * w))
            recon = np.clip(model(tf.constant(padded)).numpy()[0, :h, :w], 0, 1)
            psnr.append(_psnr(recon, image))
            if args.unquantized:
                positions = tf.constant([float(level)])
                gain, inv_gain = model._gains(positions)
                latent = model.g_a(tf.constant(padded)) * gain * inv_gain
                # the model's own synthesis: with `level_synthesis` its per-level tables apply too
                synthesis = getattr(model, "_synthesis", None)
                out = synthesis(latent, positions, False) if synthesis else model.g_s(latent)
                plain = out.numpy()[0, :h, :w]
                ceiling.append(_psnr(np.clip(plain, 0, 1), image))
        tail = f" {np.mean(ceiling):.2f} |" if args.unquantized else ""
        print(f"| {level + 1} | {model.lmbdas[level]:g} | {np.mean(bpp):.4f} | {np.mean(psnr):.2f} |{tail}", flush=True)
    return 0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12))


if __name__ == "__main__":
    sys.exit(main())
