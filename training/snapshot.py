"""Carry a long training run from one machine (or session) to the next: its weights, small enough for git.

    python -m training.snapshot save <checkpoint dir> <snapshot dir> --model codec_cc --model-args '{...}'
    python -m training.snapshot restore <snapshot dir> <checkpoint dir>

A training checkpoint (`--checkpoint-dir`) holds the model, the optimizer's moments and the step; the
moments double its size, and checkpoints live outside git. `save` keeps the model's weights, the step
and the epoch of the newest checkpoint — a checkpoint of its own, without the optimizer — and
`restore` puts it where `python -m training train --checkpoint-dir` resumes from: the run goes on from
that step and epoch (so `--epochs` and `--lr-decay` keep their meaning), with the optimizer's moments
starting afresh (Adam re-estimates them within a few hundred steps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import keras
import tensorflow as tf

SHARD_BYTES = 8 * 2**20


def save(checkpoint_dir: Path, snapshot_dir: Path, architecture: str, model_args: dict) -> Path:
    """The newest checkpoint's model, step and epoch, written again without the optimizer."""
    from training.models.registry import get_architecture
    from training.train import trained_variables

    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        raise SystemExit(f"no checkpoint in {checkpoint_dir}")
    model = get_architecture(architecture)(input_shape=(None, None, 3), **model_args)
    model(tf.zeros([1, model.size_multiple, model.size_multiple, 3]))
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    # Through the optimizer too: some models' weights are only reachable in a checkpoint that way
    # (see training.train.fit); its moments are read and then left out of the snapshot.
    optimizer = keras.optimizers.Adam()
    optimizer.build(trained_variables(model))
    variables = list(model.variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, epoch=epoch,
                        variables=variables).read(latest).expect_partial()
    if snapshot_dir.exists():
        shutil.rmtree(snapshot_dir)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step, epoch=epoch, variables=variables),
                                         str(snapshot_dir), max_to_keep=1)
    # shards of at most SHARD_BYTES, so that no file of the snapshot is large for git
    sharding = tf.train.experimental.MaxShardSizePolicy(max_shard_size=SHARD_BYTES)
    manager.save(checkpoint_number=int(epoch.numpy()),
                 options=tf.train.CheckpointOptions(experimental_sharding_callback=sharding))
    print(f"saved the weights of {latest} (epoch {int(epoch.numpy())}, step {int(step.numpy())}) to {snapshot_dir}")
    return snapshot_dir


def restore(snapshot_dir: Path, checkpoint_dir: Path) -> None:
    if tf.train.latest_checkpoint(str(snapshot_dir)) is None:
        raise SystemExit(f"no snapshot in {snapshot_dir}")
    if tf.train.latest_checkpoint(str(checkpoint_dir)) is not None:
        raise SystemExit(f"{checkpoint_dir} already holds a checkpoint: the run would resume from that instead")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for path in snapshot_dir.iterdir():
        shutil.copy2(path, checkpoint_dir / path.name)
    print(f"restored {snapshot_dir} into {checkpoint_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--model", default="codec_cc", help="save: the run's architecture")
    parser.add_argument("--model-args", type=json.loads, default={}, help="save: the run's --model-args")
    args = parser.parse_args(argv)
    if args.action == "save":
        save(args.source, args.target, args.model, args.model_args)
    else:
        restore(args.source, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
