"""tf.distribute and mixed precision for `python -m training train --strategy ... [--mixed-precision]`.

* `default`: no strategy at all; `training.train.fit` runs exactly the single-device loop it always ran.
* `mirrored`: `tf.distribute.MirroredStrategy` over every local GPU (or the devices given), one replica
  per device, in-graph all-reduce of the gradients.
* `multi-worker`: `tf.distribute.MultiWorkerMirroredStrategy` across hosts (every local GPU of every
  worker), the cluster read from `TF_CONFIG`; collectives over gRPC (ring on CPU, NCCL on GPUs).

`--batch-size` is the **global** batch: each step every replica gets `batch // replicas` images and the
replicas' mean losses and gradients are averaged, so a step is the same step on one device or on eight
(up to float rounding; `tests/training/test_distribute.py` measures it). Gradients are all-reduced here,
before the optimizer sees them, and the optimizer's own reduction is switched off
(`prepare_optimizer`): Keras 3 clips (`clipnorm`, `global_clipnorm`) *before* it reduces, i.e. each
replica's partial gradient, which is a different (looser) clip than on one device.

Checkpoints and export happen on the chief only (worker 0, or the `chief` task); other workers write
their checkpoints to a scratch folder that is removed (saving may need every worker), and skip export.
All workers restore from the chief's `--checkpoint-dir`, so for multi-worker it must be on a filesystem
every worker sees.

Mixed precision (`enable_mixed_precision`): Keras' `mixed_float16` policy (float16 compute, float32
variables) on the convolutions and dense layers *inside* each sub-network, and a dynamic loss scale; or
`mixed_bfloat16` on the same layers, for CPUs with bfloat16 dot products (AVX512-BF16, AMX) and GPUs
from Ampere on: float32's exponent range, so no loss scale and no overflow, and the checkpoint is a
float32 run's. The layers kept in float32 are the same for both, GDN included: in bfloat16 it would
not overflow, but its 8-bit mantissa cost the top rate level a measured 0.12 dB more
(models_store/README.md, "bfloat16 on the CPU").
Kept in float32: every sub-network's last convolution/dense layer and what follows it (so y, z, σ, μ,
logits and x̂ — what is rounded, fed to a likelihood or to the distortion — are float32 tensors, as the
model code expects), GDN/IGDN (x² overflows float16 above 256), the entropy models (`FactorizedDensity`,
the Gaussian conditional: likelihoods are bounded below at 1e-9, under float16's smallest subnormal
6e-8, so they would round to 0 and their −log to infinity) and any layer the model calls directly rather
than through a `keras.Sequential` (codec_cc's parameter and hyper-synthesis layers).
The export is always a plain float32, non-distributed copy (`plain_copy`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker")

# Layer types whose float16 compute is safe and worth it (matmul/conv on tensor cores).
_HALF_PRECISION_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                         keras.layers.Conv2DTranspose, keras.layers.Dense)


def make_strategy(name: str, devices: list[str] | None = None) -> tf.distribute.Strategy | None:
    """The strategy for `--strategy name` (None for `default`). Create it before any other TensorFlow
    work: multi-worker collectives must be configured at program start."""
    if name == "default":
        if devices:
            raise ValueError("--devices needs --strategy mirrored")
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices or None)
    if name == "multi-worker":
        if devices:
            raise ValueError("--devices applies to --strategy mirrored only (multi-worker uses every local GPU)")
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi-worker reads the cluster from the TF_CONFIG environment variable, "
                             "which is not set (e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:2222\", "
                             "\"host2:2222\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}')")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"TF_CONFIG is not valid JSON: {exc.msg}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process checkpoints and exports: always without a multi-worker cluster; else the
    `chief` task, or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def describe(strategy: tf.distribute.Strategy | None) -> str:
    if strategy is None:
        return "default strategy (one device)"
    resolver = getattr(strategy, "cluster_resolver", None)
    where = ""
    if resolver is not None and resolver.task_type:
        where = f", task {resolver.task_type}:{resolver.task_id}{' (chief)' if is_chief(strategy) else ''}"
    devices = ", ".join(strategy.extended.worker_devices)
    kind = ("MultiWorkerMirroredStrategy" if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            else type(strategy).__name__)  # its class is CollectiveAllReduceStrategy
    return f"{kind}: {strategy.num_replicas_in_sync} replicas in sync (local: {devices}){where}"


def dataset_fn(splits, global_batch: int, seed: int, crop: int | None) -> Callable:
    """For `strategy.distribute_datasets_from_function`: each input pipeline (one per worker) yields
    per-replica batches, consecutive ones going to consecutive local replicas.

    Fixed-size arrays: every worker shuffles the same way and cuts the same global batches, then keeps
    its contiguous part; so one host's replicas see exactly the single-device batches, split in order.
    Photo folders (endless i.i.d. crops): each worker draws its own stream (worker 0 the single-device
    one), rather than every worker cropping every image of the global batch and dropping most.
    """
    from training import data

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(global_batch)
        pipelines, index = context.num_input_pipelines, context.input_pipeline_id
        if splits.fixed_size:
            ds = data.train_dataset(splits, global_batch, seed)
            if pipelines > 1:
                part = global_batch // pipelines
                ds = ds.map(lambda batch: batch[index * part:(index + 1) * part])
        else:
            stream = seed if index == 0 else int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            ds = data.train_dataset(splits, global_batch // pipelines, stream, crop=crop)
        return ds.rebatch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return make


def check_batch(strategy: tf.distribute.Strategy | None, global_batch: int) -> None:
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if global_batch % replicas:
        raise ValueError(f"--batch-size {global_batch} is the global batch and must divide evenly over the "
                         f"{replicas} replicas (e.g. {replicas * max(1, global_batch // replicas)})")


def in_replica(strategy: tf.distribute.Strategy, variables_of: Callable, model: keras.Model) -> list:
    """`variables_of(model)` (a list of the model's trainable variables, found with a gradient tape)
    computed in a replica context: a tape cannot watch distributed variables outside one."""
    def flags():
        chosen = {id(v) for v in variables_of(model)}
        return tf.constant([id(v) in chosen for v in model.trainable_variables])

    local = strategy.experimental_local_results(strategy.run(flags))[0].numpy()
    return [v for v, keep in zip(model.trainable_variables, local) if keep]


def prepare_optimizer(model: keras.Model, optimizer: keras.optimizers.Optimizer, variables: list) -> None:
    """Build the optimizer on `variables` (under the strategy's scope: its slots become mirrored) and
    switch off its own gradient all-reduce: `make_distributed_step` hands it gradients that are already
    the global mean on every replica, so its clipping sees what it would see on one device."""
    optimizer.build(variables)
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's wrapped optimizer
    if not hasattr(inner, "_all_reduce_sum_gradients"):
        raise RuntimeError(f"Keras {keras.__version__}: the TensorFlow optimizer has no _all_reduce_sum_gradients "
                           "to switch off; training.distribute needs updating for this Keras")
    inner._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


def make_distributed_step(strategy: tf.distribute.Strategy, model: keras.Model,
                          optimizer: keras.optimizers.Optimizer) -> Callable:
    """One synchronous step over a distributed batch; returns the loss terms averaged over replicas
    (each replica's are means over its equal share, so this is the global batch's mean)."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(batch):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=True)
            loss = optimizer.scale_loss(losses["loss"]) if scaled else losses["loss"]
        grads = tape.gradient(loss, model.trainable_variables)
        pairs = [(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None]
        context = tf.distribute.get_replica_context()
        reduced = context.all_reduce(tf.distribute.ReduceOp.MEAN, [g for g, _ in pairs])
        optimizer.apply_gradients(zip(reduced, [v for _, v in pairs]))
        return losses

    def step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    return tf.function(step, autograph=False)


def scratch_checkpoint_dir() -> str:
    """Where a non-chief worker writes the checkpoints it must take part in; removed after training."""
    return tempfile.mkdtemp(prefix="aec-worker-ckpt-")


def remove_scratch(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


# ---- mixed precision ---------------------------------------------------------------------------------
MIXED_DTYPES = ("float16", "bfloat16")


def enable_mixed_precision(model: keras.Model, dtype: str = "float16") -> dict[str, list[str]]:
    """Give the convolutions/dense layers of every sub-network but its last one the `mixed_<dtype>`
    policy (see the module docstring for what stays float32 and why); returns {dtype: [...],
    "float32": [...]}, "container/layer" names. Variables stay float32 either way, so checkpoints do not
    change."""
    if dtype not in MIXED_DTYPES:
        raise ValueError(f"mixed precision computes in one of {', '.join(MIXED_DTYPES)}, not {dtype!r}")
    half, full = [], []
    for container in _containers(model):  # by structure, so a model not built yet is handled alike
        convs = [layer for layer in container.layers if isinstance(layer, _HALF_PRECISION_TYPES)]
        for layer in convs[:-1]:
            layer.dtype_policy = f"mixed_{dtype}"
            half.append(f"{container.name}/{layer.name}")
        full += [f"{container.name}/{layer.name}" for layer in convs[-1:]]
    if not half:
        raise ValueError(f"{type(model).__name__} has no convolution or dense layer inside a sub-network to run in "
                         f"{dtype}; train it without --mixed-precision")
    return {dtype: half, "float32": full}


def cpu_has_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bfloat16 dot products (oneDNN uses them; without, bfloat16 is emulated). Linux
    only; elsewhere False (the caller only warns)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _containers(model: keras.Model) -> list[keras.Model]:
    """The Sequential/functional sub-networks of a model, in a fixed order (nested ones too)."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Sequential | keras.Model) and hasattr(layer, "layers"):
            found.append(layer)
    return found


def with_loss_scale(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """A dynamic loss scale around `optimizer` (float16 gradients would underflow unscaled)."""
    return keras.optimizers.LossScaleOptimizer(optimizer)


def plain_copy(model: keras.Model, factory: Callable[[], keras.Model], sample: np.ndarray) -> keras.Model:
    """A fresh float32 model outside any strategy with `model`'s variable values: what gets finalized and
    exported, so an export never holds distributed variables or float16 layers. Call it outside the
    strategy's scope."""
    copy = factory()
    copy(sample)
    source, target = list(model.variables), list(copy.variables)
    if len(source) != len(target) or any(
            s.name != t.name or tuple(s.shape) != tuple(t.shape) for s, t in zip(source, target)):
        raise RuntimeError("the trained model and its fresh copy do not have the same variables")
    for s, t in zip(source, target):
        t.assign(np.asarray(s.numpy()))
    return copy

