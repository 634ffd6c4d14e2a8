"""Portable snapshots (training.snapshot): a training checkpoint's weights out as named NumPy shards and
back into a checkpoint that a training run resumes from, at the same step, with the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import snapshot
from training.gpu import snapshot_files
from training.models.codec_cc import ChannelCodec
from training.train import make_train_step, resumed_step, trained_variables

TINY = {"num_filters": 16, "latent_channels": 24, "hyper_channels": 16, "support_channels": 24, "slices": [4, 8, 12],
        "param_hidden": [16, 16], "lrp_hidden": 16, "lmbdas": [0.002, 0.02, 0.2]}


def _run_checkpoint(directory: Path, steps: int = 3) -> ChannelCodec:
    """A checkpoint as `python -m training train` writes one (model, optimizer, step, epoch)."""
    keras.utils.set_random_seed(0)
    model = ChannelCodec(**TINY)
    model(tf.zeros([1, 64, 64, 3]))
    optimizer = keras.optimizers.Adam(1e-2)
    train_step = make_train_step(model, optimizer)
    images = tf.random.uniform([2, 64, 64, 3], seed=1)
    for _ in range(steps):
        train_step(images)
    step, epoch = tf.Variable(1200, dtype=tf.int64), tf.Variable(3, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, epoch=epoch, variables=list(model.variables))
    tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=2).save(checkpoint_number=3)
    return model


def test_save_then_restore_resumes_at_the_same_step_with_the_same_weights(tmp_path: Path) -> None:
    trained = _run_checkpoint(tmp_path / "run")
    snapshot.save(tmp_path / "run", tmp_path / "snap", "codec_cc", TINY)
    index = json.loads((tmp_path / "snap" / "snapshot.json").read_text())
    assert (index["architecture"], index["step"], index["epoch"]) == ("codec_cc", 1200, 3)
    assert index["model_args"] == TINY
    assert not list((tmp_path / "snap").glob("*.index"))  # NumPy shards only, no TensorFlow checkpoint

    snapshot.restore(tmp_path / "snap", tmp_path / "resumed")
    assert resumed_step(tmp_path / "resumed") == 1200
    # read back as the training loop reads its checkpoint, into a model built with other random weights
    keras.utils.set_random_seed(7)
    fresh = ChannelCodec(**TINY)
    fresh(tf.zeros([1, 64, 64, 3]))
    optimizer = keras.optimizers.Adam()
    optimizer.build(trained_variables(fresh))
    step, epoch = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(model=fresh, optimizer=optimizer, step=step, epoch=epoch, variables=list(fresh.variables)).read(
        tf.train.latest_checkpoint(str(tmp_path / "resumed"))).expect_partial()
    assert (int(step.numpy()), int(epoch.numpy())) == (1200, 3)
    for name, weight in trained.named_weights().items():
        np.testing.assert_array_equal(fresh.named_weights()[name].numpy(), weight.numpy(), err_msg=name)


def test_shards_stay_small_and_a_damaged_snapshot_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(snapshot_files, "SHARD_BYTES", 4096)
    arrays = {f"w{i}": np.full((20, 20), i, np.float32) for i in range(5)}  # 1,600 bytes each
    snapshot_files.write(tmp_path / "s", arrays, {"step": 1})
    shards = sorted((tmp_path / "s").glob("weights-*.npz"))
    assert len(shards) == 3
    back, meta = snapshot_files.read(tmp_path / "s")
    assert meta["step"] == 1 and all(np.array_equal(back[k], v) for k, v in arrays.items())
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError):
        snapshot_files.read(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no snapshot"):
        snapshot_files.read(tmp_path / "nothing")


def test_restore_never_overwrites_a_run(tmp_path: Path) -> None:
    _run_checkpoint(tmp_path / "run")
    snapshot.save(tmp_path / "run", tmp_path / "snap", "codec_cc", TINY)
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        snapshot.restore(tmp_path / "snap", tmp_path / "run")


def test_restore_into_a_branch_of_another_shape(tmp_path: Path) -> None:
    """`restore --model-args`: the snapshot's weights into a checkerboard branch, whose context kernels
    keep their zero start; without the override a missing weight is still an error."""
    trained = _run_checkpoint(tmp_path / "run")
    snapshot.save(tmp_path / "run", tmp_path / "snap", "codec_cc", TINY)
    snapshot.restore(tmp_path / "snap", tmp_path / "branch", {"checkerboard": True})
    branch = ChannelCodec(**TINY, checkerboard=True)
    branch(tf.zeros([1, 64, 64, 3]))
    tf.train.Checkpoint(variables=list(branch.variables)).read(
        tf.train.latest_checkpoint(str(tmp_path / "branch"))).expect_partial()
    named = branch.named_weights()
    for name, weight in trained.named_weights().items():
        np.testing.assert_array_equal(named[name].numpy(), weight.numpy(), err_msg=name)
    assert not np.any(named["ctx1.0.kernel"].numpy())
    with pytest.raises(SystemExit, match="lacks 3 weights"):
        snapshot.set_named_weights(branch, {n: w.numpy() for n, w in trained.named_weights().items()}, "codec_cc")
