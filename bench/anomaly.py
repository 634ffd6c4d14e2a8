"""One-class MNIST anomaly benchmark: train on one digit, score the test images, AUROC per digit.

For each architecture, digit and seed it runs the real `python -m training train --classes d
--anomaly-score combined` (export included) into a temporary store and reads the exported card, so
the figures describe the served artifact: AUROC of every score component (mse, ssim, bits, combined)
and the false-positive rate observed on normal test images at the threshold calibrated for `--score`
(pooled over digits and seeds, with a 95% interval).

    python bench/anomaly.py --dataset idx:../shared/datasets/mnist-t10k --split 8000 \\
        --models conv_ae,keras_cae --seeds 0,1,2 --epochs 20 --json artifacts/anomaly.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contract.tf_logging import quiet_tensorflow

quiet_tensorflow()  # TensorFlow quiet unless AEC_TF_VERBOSE=1

SCORES = ("mse", "ssim", "bits", "combined")


def run_one(model: str, digit: int, seed: int, args: argparse.Namespace, store: Path) -> dict:
    from contract.card import ModelCard
    from training.cli import main

    name = f"{model.replace('_', '-')}-d{digit}-s{seed}"
    argv = ["train", "--model", model, "--dataset", args.dataset, "--classes", str(digit), "--seed", str(seed),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--anomaly-score", args.score,
            "--target-fpr", str(args.target_fpr), "--val-fraction", str(args.val_fraction),
            "--out", str(store), "--name", name, "--log-dir", str(store / "runs"), "--no-progress",
            "--skip-bitstreams"]
    if args.split:
        argv += ["--split", str(args.split)]
    if args.model_args.get(model):
        argv += ["--model-args", json.dumps(args.model_args[model])]
    with contextlib.redirect_stdout(io.StringIO()):
        main(argv)
    card = ModelCard.read(store / name / "1")
    return {"model": model, "digit": digit, "seed": seed,
            **{s: card.metrics[f"auroc_{s}"] for s in SCORES},
            "observed_fpr": card.metrics["observed_fpr_test"], "threshold": card.anomaly.threshold,
            "normal_test_images": card.metrics.get("normal_test_images"), "score": args.score,
            "threshold_method": card.anomaly.threshold_method}


def table(rows: list[dict], models: list[str], digits: list[int], score: str) -> str:
    """Digits down, architectures across: mean AUROC over seeds (± spread when several)."""
    seeds = {m: len({r["seed"] for r in rows if r["model"] == m}) for m in models}
    header = " | ".join(f"{m} ({seeds[m]} seed{'s' if seeds[m] > 1 else ''})" for m in models)
    lines = [f"AUROC ({score}), mean over seeds", "digit | " + header, "---|" + "---|" * len(models)]
    means: dict[str, list[float]] = {m: [] for m in models}
    for d in digits:
        cells = []
        for m in models:
            vals = [r[score] for r in rows if r["model"] == m and r["digit"] == d]
            if vals:
                means[m].append(statistics.mean(vals))
                spread = f" ±{statistics.pstdev(vals):.3f}" if len(vals) > 1 else ""
                cells.append(f"{statistics.mean(vals):.3f}{spread}")
            else:
                cells.append("-")
        lines.append(f"{d} | " + " | ".join(cells))
    lines.append("**mean** | " + " | ".join(f"**{statistics.mean(v):.3f}**" if v else "-" for v in means.values()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist", help="mnist (Keras loader) or idx:<dir>")
    parser.add_argument("--split", type=int, help="single t10k pair: first N train/validate, rest test (8000)")
    parser.add_argument("--models", default="conv_ae,keras_cae,dense_ae,single_layer_cae")
    parser.add_argument("--model-args", type=json.loads, default={},
                        help='per-architecture --model-args, e.g. \'{"conv_ae": {"latent_channels": 2}}\'')
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--score", choices=SCORES, default="ssim",
                        help="the score each model is calibrated and judged on (the card's score)")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="train nothing: print the tables of earlier runs' --json files, merged into one")
    args = parser.parse_args(argv)
    if args.report:
        rows = [row for path in args.report for row in json.loads(path.read_text())]
        models = list(dict.fromkeys(row["model"] for row in rows))
        digits = sorted({row["digit"] for row in rows})
        print_tables(rows, models, digits, args.target_fpr, rows[0].get("score", args.score))
        return 0
    models = args.models.split(",")
    digits = [int(d) for d in args.digits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-") as tmp:
        for model in models:
            for digit in digits:
                for seed in seeds:
                    started = time.time()
                    row = run_one(model, digit, seed, args, Path(tmp))
                    rows.append(row)
                    print(f"{model} digit {digit} seed {seed}: " + " ".join(f"{s}={row[s]:.3f}" for s in SCORES)
                          + f" fpr={row['observed_fpr']:.3f} ({time.time() - started:.0f}s)", flush=True)
                    if args.json:
                        args.json.write_text(json.dumps(rows, indent=1))
    print()
    print_tables(rows, models, digits, args.target_fpr, args.score)
    return 0


def print_tables(rows: list[dict], models: list[str], digits: list[int], target: float, score: str) -> None:
    for kind in SCORES:
        print(table(rows, models, digits, kind), end="\n\n")
    print(fpr_table(rows, models, target, score))


def fpr_table(rows: list[dict], models: list[str], target: float, score: str) -> str:
    """Observed false-positive rate of the calibrated threshold on the normal test images, per model:
    pooled over every digit and seed (with a Wilson 95% interval), and the spread of single runs.

    A single run has ~200 normal test digits, so one false positive moves its rate by half a point:
    the pooled rate is the figure that can show whether calibration is on target."""
    lines = [f"false-positive rate at the calibrated threshold (score {score}, target {target:.1%})",
             "model | runs | normal test images | pooled FPR (95% CI) | runs > 2x target | max single run",
             "---|---|---|---|---|---"]
    for m in models:
        mine = [r for r in rows if r["model"] == m and r.get("normal_test_images")]
        if not mine:
            continue
        n = sum(r["normal_test_images"] for r in mine)
        k = sum(round(r["observed_fpr"] * r["normal_test_images"]) for r in mine)
        low, high = wilson(k, n)
        over = sum(r["observed_fpr"] > 2 * target for r in mine)
        lines.append(f"{m} | {len(mine)} | {n:.0f} | {k / n:.2%} ({low:.2%}-{high:.2%}) | {over} | "
                     f"{max(r['observed_fpr'] for r in mine):.1%}")
    return "\n".join(lines)


def wilson(k: int, n: float, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


if __name__ == "__main__":
    sys.exit(main())
