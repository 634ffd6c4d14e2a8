"""An exponential moving average of the trained weights (`python -m training train --ema-decay D`).

Why: the codec's curve moved most when the learning rate dropped (its iterates are noisy), and a drop
slows every later step as much as it calms them. An average of the iterates removes the same noise
while the run keeps its pace, and costs one multiply-add per weight and step. The run itself trains
the raw weights; the average rides along in the checkpoint (`ema`, `ema_updates`) and is what the run
exports and what `bench/checkpoint_rd.py --average` measures.

The decay warms up as TensorFlow's `ExponentialMovingAverage(num_updates=...)` does,
min(D, (1 + n) / (10 + n)) at the n-th update, so an average that starts (or restarts, from a checkpoint
or snapshot without one) at the current weights follows them closely at first instead of dragging a
stale start along.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf


class WeightAverage:
    """The average of `variables` (the trained ones, in the optimizer's order), updated after each step."""

    def __init__(self, variables: list, decay: float) -> None:  # Keras or TensorFlow variables
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema-decay must lie strictly between 0 and 1, not {decay:g}")
        self.decay = float(decay)
        self.variables = list(variables)
        self.values = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"ema_{i}")
                       for i, v in enumerate(self.variables)]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")

    def checkpoint_entries(self) -> dict:
        """What a `tf.train.Checkpoint` keeps of the average."""
        return {"ema": self.values, "ema_updates": self.updates}

    def reset(self) -> None:
        """Start over at the current weights (a checkpoint that held no average)."""
        for value, variable in zip(self.values, self.variables):
            value.assign(tf.convert_to_tensor(variable))
        self.updates.assign(0)

    def update(self) -> None:
        """One step of the average (traceable: the training step calls it inside its tf.function)."""
        n = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        for value, variable in zip(self.values, self.variables):
            value.assign(decay * value + (1.0 - decay) * tf.convert_to_tensor(variable))
        self.updates.assign_add(1)

    def copy_to_model(self) -> None:
        """Put the average into the model's weights (for export; the checkpoint keeps the raw ones)."""
        for value, variable in zip(self.values, self.variables):
            variable.assign(value)


def read_average(checkpoint: str | Path, variables: list[tf.Variable]) -> int:
    """Set `variables` (the trained ones, in the optimizer's order) to the average a checkpoint holds;
    returns its number of updates. A checkpoint without an average is refused."""
    reader = tf.train.load_checkpoint(str(checkpoint))
    if not reader.has_tensor("ema_updates/.ATTRIBUTES/VARIABLE_VALUE"):
        raise ValueError(f"{checkpoint} holds no weight average: the run was not trained with --ema-decay")
    for i, variable in enumerate(variables):
        variable.assign(reader.get_tensor(f"ema/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
    return int(reader.get_tensor("ema_updates/.ATTRIBUTES/VARIABLE_VALUE"))
