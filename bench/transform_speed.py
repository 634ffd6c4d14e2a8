"""Seconds per megapixel of codec v2's transforms for shapes not yet trained, side by side.

    python bench/transform_speed.py --model-args '{"num_filters": 96, "latent_channels": 192, ...}' \
        --variant '{}' --variant '{"synthesis_residual": [2, 1, 0]}' --megapixels 1 --threads 1 --rounds 3

Why: a capacity change (wider transforms, residual blocks) is judged against the encode + decode time
budget before tens of thousands of training steps are spent on it. Each variant is `--model-args` with
the variant's keys merged in, built with random weights (time does not depend on their values): g_a as
`encode` runs it, and g_s as the exported `decode` runs it (transposed convolutions as subpixel
convolutions, the level-conditional tables and residual blocks in place), each traced once and timed on
one square image of `--megapixels`. The variants alternate within each round, so a machine that gets
busier slows all of them alike; the table has the best round of each. The entropy model's stages are
left out: they do not change with these shapes (`bench/photos.py` times a whole exported model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1


def _timed(fn, argument, rounds: int) -> float:
    fn(argument)  # traced and warmed
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn(argument).numpy()
        best = min(best, time.perf_counter() - started)
    return best


def measure(model_args: dict, variants: Sequence[dict], megapixels: float, rounds: int) -> list[dict]:
    """[{variant, analysis_s_per_mp, synthesis_s_per_mp}] in the order of `variants`."""
    import tensorflow as tf

    from training.models.codec_cc import ChannelCodec

    side = max(64, round((megapixels * 1e6) ** 0.5 / 64) * 64)  # the codec's size multiple
    mp = side * side / 1e6
    image = tf.random.uniform((1, side, side, 3))
    latent = tf.random.normal((1, side // 16, side // 16, int(model_args.get("latent_channels", 192))))
    runs = []
    for variant in variants:
        model = ChannelCodec(**{**model_args, **variant})
        model(tf.zeros((1, 64, 64, 3)))
        positions = model._positions(None, image)
        analysis = tf.function(lambda x, m=model: m.g_a(x, training=False))
        synthesis = tf.function(lambda y, m=model, p=positions: m._synthesis(y, p, False, subpixel=True))
        runs.append((variant, analysis, synthesis))
    best = [[float("inf"), float("inf")] for _ in runs]
    for _ in range(rounds):
        for i, (_, analysis, synthesis) in enumerate(runs):
            best[i][0] = min(best[i][0], _timed(analysis, image, 1))
            best[i][1] = min(best[i][1], _timed(synthesis, latent, 1))
    return [{"variant": variant, "megapixels": mp, "analysis_s_per_mp": a / mp, "synthesis_s_per_mp": s / mp}
            for (variant, _, _), (a, s) in zip(runs, best)]


def format_table(rows: list[dict]) -> str:
    first = rows[0]
    lines = [f"{'variant':<44} {'g_a s/MP':>9} {'g_s s/MP':>9} {'g_s vs first':>12}"]
    for row in rows:
        ratio = row["synthesis_s_per_mp"] / first["synthesis_s_per_mp"]
        lines.append(f"{json.dumps(row['variant']):<44} {row['analysis_s_per_mp']:>9.3f} "
                     f"{row['synthesis_s_per_mp']:>9.3f} {ratio:>11.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-args", type=json.loads, required=True, help="codec_cc arguments (the run's)")
    parser.add_argument("--variant", type=json.loads, action="append", default=[],
                        help="keys merged into --model-args (repeatable; default: one variant, '{}')")
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra-op threads (1: the service's default on 2 cores; 0: leave "
                             "TensorFlow's setting, e.g. where it has already started)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.threads:  # before TensorFlow's first op: it cannot change after
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    rows = measure(args.model_args, args.variant or [{}], args.megapixels, args.rounds)
    threads = args.threads or tf.config.threading.get_intra_op_parallelism_threads() or "TensorFlow's default"
    print(f"{rows[0]['megapixels']:.2f} MP, {threads} thread(s), best of {args.rounds} rounds")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
