"""The lines `training train` ends with: where the run went and the commands that come next.

A new user's next three questions after a run are where its curves are, what was exported, and how to
measure and serve it; the answers are exact commands for this run (its dataset flags, its store, its
model name), so they can be pasted as they are.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def python() -> str:
    """This interpreter as the user would type it: `.venv/bin/python` in a checkout, else its path."""
    path = Path(sys.executable)
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def evaluate_command(version_dir: Path, args: argparse.Namespace) -> list[str]:
    """`training evaluate` on the same test images the card's metrics come from."""
    command = [python(), "-m", "training", "evaluate", str(version_dir), "--dataset", args.dataset]
    if args.split is not None:
        command += ["--split", str(args.split)]
    if args.test_dataset:
        command += ["--test-dataset", args.test_dataset]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    if args.dataset.startswith("folder:") and not args.test_dataset:  # the held-out test split is drawn
        command += ["--seed", str(args.seed), "--val-fraction", f"{args.val_fraction:g}"]
    return command


def serve_command(version_dir: Path) -> list[str]:
    """`python -m service` on the store the version went into, with this model as the default."""
    store, name = version_dir.parent.parent, version_dir.parent.name
    return [f"AEC_MODELS_DIR={shlex.quote(str(store))}", f"AEC_DEFAULT_MODEL={shlex.quote(name)}",
            python(), "-m", "service"]


def summary(version_dir: Path, args: argparse.Namespace, log_dir: Path, steps: int | None, seconds: float,
            metrics: dict[str, float]) -> str:
    """The closing block of a training run."""
    measured = ", ".join(f"{key} {metrics[key]:.4g}" for key in ("mse", "psnr", "bpp", "ms_ssim_db") if key in metrics)
    name, version = version_dir.parent.name, version_dir.name
    watch = "curves, images, projector" if (log_dir / "projector_config.pbtxt").is_file() else "curves, images"
    serve = serve_command(version_dir)
    lines = [
        "",
        f"trained {steps or 0} steps in {seconds:.0f} s; exported {name} version {version}",
        f"  run folder  {log_dir}    ({watch}: tensorboard --logdir {log_dir.parent})",
        f"  exported    {version_dir}    (model.json: the card; evaluation.json: per-epoch history, splits)",
        f"  test        {measured}" if measured else None,
        f"  evaluate    {shlex.join(evaluate_command(version_dir, args))}",
        f"  serve       {' '.join(serve[:2])} {shlex.join(serve[2:])}",
        (f"  try it      curl -s -o reconstruction.png -F file=@image.png "
         f"'localhost:8000/reconstruct?model={name}&version={version}'"),
    ]
    return "\n".join(line for line in lines if line is not None)
