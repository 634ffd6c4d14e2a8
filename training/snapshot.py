"""Carry a long training run from one machine (or session, or framework) to the next: its weights, small
enough for git.

    python -m training.snapshot save <checkpoint dir> <snapshot dir> --model codec_cc --model-args '{...}'
    python -m training.snapshot restore <snapshot dir> <checkpoint dir> [--model-args '{"checkerboard": true}']

A training checkpoint (`--checkpoint-dir`) holds the model, the optimizer's moments and the step; the
moments double its size, and checkpoints live outside git. `save` keeps the model's trained weights by
their stable names (`named_weights`), the step and the epoch of the newest checkpoint, as NumPy arrays
(`training/gpu/snapshot_files.py`): the PyTorch twin of the training graph (`training/gpu/`) reads and
writes the same files on a machine without TensorFlow. `restore` builds the model from the snapshot's
index, sets its weights and writes a checkpoint where `python -m training train --checkpoint-dir`
resumes from: the run goes on from that step and epoch (so `--epochs` and `--lr-decay` keep their
meaning), with the optimizer's moments starting afresh (Adam re-estimates them within a few hundred
steps). `restore --model-args` starts a branch of another shape from the snapshot: the arguments are
merged into the snapshot's, and the weights the new shape adds (e.g. a checkerboard context) keep their
initial values, which the architecture chooses so that the branch starts as the snapshot computes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.gpu import snapshot_files


def _model(architecture: str, model_args: dict) -> keras.Model:
    from training.models.registry import get_architecture

    model = get_architecture(architecture)(input_shape=(None, None, 3), **model_args)
    model(tf.zeros([1, model.size_multiple, model.size_multiple, 3]))
    if not hasattr(model, "named_weights"):
        raise SystemExit(f"architecture {architecture!r} has no named weights to snapshot")
    return model


def save(checkpoint_dir: Path, snapshot_dir: Path, architecture: str, model_args: dict) -> Path:
    """The newest checkpoint's trained weights, step and epoch, as a portable snapshot."""
    from training.train import trained_variables

    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        raise SystemExit(f"no checkpoint in {checkpoint_dir}")
    model = _model(architecture, model_args)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    # Through the optimizer too: some models' weights are only reachable in a checkpoint that way
    # (see training.train.fit); its moments are read and then left out of the snapshot.
    optimizer = keras.optimizers.Adam()
    optimizer.build(trained_variables(model))
    tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, epoch=epoch,
                        variables=list(model.variables)).read(latest).expect_partial()
    arrays = {name: weight.numpy() for name, weight in model.named_weights().items()}
    meta = {"architecture": architecture, "model_args": model_args, "step": int(step.numpy()),
            "epoch": int(epoch.numpy()), "from": str(latest)}
    snapshot_files.write(snapshot_dir, arrays, meta)
    print(f"saved the weights of {latest} (epoch {meta['epoch']}, step {meta['step']}) to {snapshot_dir}")
    return snapshot_dir


def set_named_weights(model: keras.Model, arrays: dict[str, np.ndarray], architecture: str,
                      allow_new: bool = False) -> list[str]:
    """A snapshot's arrays into a built model's `named_weights`: all of them, or SystemExit; with
    `allow_new` the model's weights the snapshot lacks keep their values. Returns those names."""
    named = model.named_weights()
    missing = sorted(set(named) - set(arrays))
    if missing and not allow_new:
        raise SystemExit(f"the snapshot lacks {len(missing)} weights of {architecture}: {', '.join(missing[:5])}")
    for name, weight in named.items():
        if name in arrays:
            weight.assign(np.asarray(arrays[name], weight.dtype))
    return missing


def restore(snapshot_dir: Path, checkpoint_dir: Path, model_args: dict | None = None) -> None:
    """A resumable checkpoint in `checkpoint_dir` from the snapshot (which must not already hold one);
    `model_args` merged into the snapshot's for a branch of another shape (module docstring)."""
    arrays, meta = snapshot_files.read(snapshot_dir)
    if tf.train.latest_checkpoint(str(checkpoint_dir)) is not None:
        raise SystemExit(f"{checkpoint_dir} already holds a checkpoint: the run would resume from that instead")
    model = _model(meta["architecture"], {**meta["model_args"], **(model_args or {})})
    new = set_named_weights(model, arrays, meta["architecture"], allow_new=bool(model_args))
    if new:
        print(f"{len(new)} weights not in the snapshot start at their initial values: {', '.join(new[:8])}")
    step = tf.Variable(int(meta["step"]), dtype=tf.int64, trainable=False)
    epoch = tf.Variable(int(meta["epoch"]), dtype=tf.int64, trainable=False)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step, epoch=epoch, variables=list(model.variables)),
                                         str(checkpoint_dir), max_to_keep=1)
    manager.save(checkpoint_number=int(meta["epoch"]))
    print(f"restored {snapshot_dir} (epoch {meta['epoch']}, step {meta['step']}) into {checkpoint_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--model", default="codec_cc", help="save: the run's architecture")
    parser.add_argument("--model-args", type=json.loads, default={},
                        help="save: the run's --model-args; restore: arguments merged into the snapshot's (a branch)")
    args = parser.parse_args(argv)
    if args.action == "save":
        save(args.source, args.target, args.model, args.model_args)
    else:
        restore(args.source, args.target, args.model_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
