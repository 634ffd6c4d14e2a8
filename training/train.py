"""The training loop: minimise `compute_losses(...)["loss"]`, log to TensorBoard, checkpoint each epoch.

A custom loop (not `Model.fit`) because models report several named loss terms (rate, distortion,
regularisers) and the codec's additive-noise training needs `training=True` semantics of its own.
Checkpoints let a long CPU/GPU run resume in a later session.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from contract.card import ModelCard
from training.averaging import WeightAverage
from training.data import eval_batches
from training.models.base import Autoencoder


def make_optimizer(name: str, args: dict) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name, with a plain (variable) learning rate.

    Never a Keras schedule: an optimizer with a schedule has no learning-rate variable, which shifts
    the index of every slot variable in its checkpoint, so a run resumed with a decay it did not have
    before read its Adam velocities from the momenta and went NaN at the first step. The late drop of
    `fit(lr_decay=)` assigns the variable instead.
    """
    args = dict(args)
    try:
        return keras.optimizers.get({"class_name": name, "config": args})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot build optimizer {name!r} with {json.dumps(args)}: {exc}") from None


def learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The current rate (a plain or a mirrored variable under tf.distribute)."""
    return float(tf.convert_to_tensor(optimizer.learning_rate).numpy())


def make_train_step(model: Autoencoder, optimizer: keras.optimizers.Optimizer, traced: bool = True,
                    average: WeightAverage | None = None):
    """One optimiser step on `compute_losses(batch)["loss"]` (then one of `average`, if given); returns
    the loss terms.

    Traced without autograph: the model code is pure TF ops, and autograph would re-read (possibly
    edited) source files at trace time. `traced=False` runs eagerly (cheaper for a handful of steps).
    """

    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)  # --mixed-precision

    def train_step(batch):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=True)
            loss = optimizer.scale_loss(losses["loss"]) if scaled else losses["loss"]
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
        if average is not None:
            average.update()
        return losses

    return tf.function(train_step, autograph=False) if traced else train_step


def trained_variables(model: Autoencoder) -> list:
    """The variables a training step updates (those with a gradient), in the order the optimizer holds
    them: a checkpoint keyed by the optimizer's list needs exactly this list to be read back."""
    shape = [1, model.size_multiple * 2, model.size_multiple * 2, model.image_shape[-1]]
    if model.image_shape[0]:
        shape = [1, *model.image_shape]
    with tf.GradientTape() as tape:
        loss = model.compute_losses(tf.random.uniform(shape, seed=0), training=True)["loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    return [v for g, v in zip(grads, model.trainable_variables) if g is not None]


def resumed_step(checkpoint_dir: Path | None) -> int:
    """The step a run with this checkpoint dir resumes from (0 when there is none), read from the
    newest checkpoint without building anything."""
    latest = tf.train.latest_checkpoint(str(checkpoint_dir)) if checkpoint_dir else None
    if not latest:
        return 0
    return int(tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def val_images_for(model: Autoencoder, images, crop: int | None, limit: int = 256) -> np.ndarray:
    """A fixed validation batch: the first images, or centre crops for photos of mixed sizes."""
    if isinstance(images, np.ndarray):
        return images[:limit]
    size = crop or 128
    out = []
    for img in images:
        if img.shape[0] >= size and img.shape[1] >= size:
            y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
            out.append(img[y : y + size, x : x + size])
    return np.stack(out[:limit])


def fit(model: Autoencoder, train_ds: tf.data.Dataset, val_images: np.ndarray, *, epochs: int,
        optimizer: keras.optimizers.Optimizer, steps_per_epoch: int | None = None, log_dir: Path | None = None,
        checkpoint_dir: Path | None = None, init_from: Path | None = None,
        progress: bool = True, strategy: tf.distribute.Strategy | None = None,
        dataset_fn: Callable | None = None, log_every: int = 50,
        projector: tuple[np.ndarray, np.ndarray | None] | None = None,
        lr_decay: int | None = None, ema_decay: float | None = None) -> list[dict[str, float]]:
    """Train; returns one dict of mean train and validation loss terms per epoch.

    `ema_decay` (training.averaging): keep an exponential moving average of the trained weights in the
    checkpoint; when the run ends the model holds the average (what is exported), the checkpoint the
    raw weights the run goes on from. One device only.

    TensorBoard (`log_dir`): the training loss terms averaged over every `log_every` steps (and over
    the rest of each epoch) with the learning rate, the validation terms and an input|reconstruction
    grid per epoch, and at the end the embedding projector over the codes of `projector`'s images
    (validation images and their labels, or None; fixed-size models only).

    `lr_decay`: the learning rate is divided by 10 from that step on (the one late drop of TFC's and
    CompressAI's codec recipes), counted in the run's steps, so a resumed run keeps it and a run
    resumed with a new `lr_decay` takes it. A non-finite loss stops the run before it can checkpoint.

    `init_from` starts from the weights of an exported version of the same architecture and config
    (its SavedModel variables are a checkpoint of `module.model`), so training can go on in a later
    session from what was shipped.

    `strategy` (training.distribute; None: one device, the loop as it always was): the model and the
    optimizer must have been created under `strategy.scope()`; batches come from `dataset_fn` through
    `distribute_datasets_from_function` (or else `train_ds`, split by `experimental_distribute_dataset`),
    and only the chief writes TensorBoard logs and checkpoints into `checkpoint_dir` (the other workers
    restore from it, so it must be shared, and save into a scratch folder).
    """
    from training import distribute

    chief = distribute.is_chief(strategy)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model(val_images[:1])  # build variables before the optimizer sees them
        if init_from:
            _init_from(model, Path(init_from))
        if strategy:
            distribute.prepare_optimizer(model, optimizer, distribute.in_replica(strategy, trained_variables, model))
    if ema_decay is not None and strategy is not None:
        raise ValueError("--ema-decay trains on one device only (not with --strategy)")
    average = WeightAverage(trained_variables(model), ema_decay) if ema_decay is not None else None
    writer = tf.summary.create_file_writer(str(log_dir)) if log_dir and chief else None
    base_rate = learning_rate(optimizer)  # the command line's, not a checkpoint's
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    start_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    manager = scratch = None
    if checkpoint_dir:
        # `variables`: every model variable in one flat list as well. Keras does not expose some
        # models' sub-layers to TensorFlow's object graph (codec_cc's: they are saved only through the
        # optimizer's list of trainable variables); the flat list makes a checkpoint complete on its own,
        # and is what training.snapshot keeps. With a loss scale (--mixed-precision) the checkpoint holds
        # the wrapped optimizer under the same name, so it reads a float32 run's files and a float32 run
        # reads its own (`loss_scale` is one more entry, which a float32 run ignores).
        inner = getattr(optimizer, "inner_optimizer", None)
        scale = {"loss_scale": optimizer} if inner is not None else {}
        averaged = average.checkpoint_entries() if average is not None else {}
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer if inner is None else inner, step=step,
                                   epoch=start_epoch, variables=list(model.variables), **scale, **averaged)
        if not chief:
            scratch = distribute.scratch_checkpoint_dir()
        manager = tf.train.CheckpointManager(ckpt, scratch or str(checkpoint_dir), max_to_keep=2)
        latest = manager.latest_checkpoint if chief else tf.train.latest_checkpoint(str(checkpoint_dir))
        if latest:
            status = ckpt.restore(latest)
            if epochs <= int(start_epoch.numpy()):  # nothing to train: the optimizer's slots are never built or read
                status.expect_partial()
            if int(optimizer.iterations.numpy()) == 0 and int(step.numpy()) > 0:
                # a weights-only snapshot (training.snapshot): the lr schedule follows the optimizer's
                # own counter, so it goes on from the run's step, not from 0
                optimizer.iterations.assign(int(step.numpy()))
            print(f"resumed from {latest} (epoch {int(start_epoch)}, step {int(step)})")
            if average is not None and int(average.updates.numpy()) == 0:
                average.reset()  # the checkpoint held no average: it starts at the restored weights
                print("weight average (--ema-decay): none in the checkpoint, starting at its weights")

    # the command line's rate, dropped if the run is past lr_decay: a checkpoint also holds the rate its
    # run ended with, and a resumed run without the drop must not keep a dropped one
    past_decay = lr_decay is not None and int(step.numpy()) >= lr_decay
    optimizer.learning_rate = base_rate / 10 if past_decay else base_rate
    if strategy:
        train_step = distribute.make_distributed_step(strategy, model, optimizer)
        dist_ds = (strategy.distribute_datasets_from_function(dataset_fn) if dataset_fn
                   else strategy.experimental_distribute_dataset(train_ds))
    else:
        train_step = make_train_step(model, optimizer, average=average)

    @tf.function(autograph=False)
    def val_step(batch):
        return model.compute_losses(batch, training=False)

    history = []
    for epoch in range(int(start_epoch), epochs):
        started, sums, count = time.time(), {}, 0
        if strategy:
            batches = itertools.islice(dist_ds, steps_per_epoch) if steps_per_epoch else dist_ds
        else:
            batches = train_ds.take(steps_per_epoch) if steps_per_epoch else train_ds
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   unit="step", leave=False)
        window, window_count = {}, 0
        for batch in bar:
            if lr_decay is not None and int(step.numpy()) == lr_decay:  # the rate of step lr_decay + 1 on
                optimizer.learning_rate = base_rate / 10
            losses = train_step(batch)
            step.assign_add(1)
            count += 1
            window_count += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value)
                window[key] = window.get(key, 0.0) + float(value)
            if not np.isfinite(sums["loss"]):
                raise FloatingPointError(f"training diverged at step {int(step.numpy())}: the loss is not finite; "
                                         "nothing of this epoch was checkpointed")
            if writer and window_count >= log_every:
                _log_steps(writer, window, window_count, optimizer, int(step.numpy()))
                window, window_count = {}, 0
            if count % 20 == 0:
                bar.set_postfix({k: f"{v / count:.4g}" for k, v in sums.items()})
            if not progress and count % 100 == 0:  # plain log lines for background runs
                print(f"  step {count}: " + " ".join(f"{k}={v / count:.4g}" for k, v in sums.items()), flush=True)
        if writer and window_count:
            _log_steps(writer, window, window_count, optimizer, int(step.numpy()))
        record = {f"train_{k}": v / max(count, 1) for k, v in sums.items()}
        val_sums, val_n = {}, 0
        for batch in eval_batches(val_images, 64):
            for key, value in val_step(tf.constant(batch)).items():
                val_sums[key] = val_sums.get(key, 0.0) + float(value) * len(batch)
            val_n += len(batch)
        record |= {f"val_{k}": v / val_n for k, v in val_sums.items()}
        record |= {"epoch": epoch + 1, "steps": int(step.numpy()), "seconds": time.time() - started}
        history.append(record)
        print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if writer:
            _log_epoch(writer, model, record, val_images, int(step.numpy()))
        start_epoch.assign(epoch + 1)
        if manager:
            manager.save()
    distribute.remove_scratch(scratch)
    if average is not None:
        average.copy_to_model()
        print(f"the model now holds the weight average ({int(average.updates.numpy())} updates, decay "
              f"{average.decay:g}); the checkpoint keeps the raw weights")
    if writer and history and projector is not None and not model.input_spec_card().any_size:
        _log_projector(Path(log_dir), model, *projector)
    return history


def _init_from(model: Autoencoder, version_dir: Path) -> None:
    """Load an exported version's weights; variables it lacks (a multi-rate codec's gains when started
    from a single-rate one) keep their initial values and are named, anything else must match."""
    card = ModelCard.read(version_dir) if (version_dir / "model.json").is_file() else None
    source_config = card.config if card else {}
    if card and card.architecture != model.architecture:  # another architecture: the model adopts what fits
        from training.models.registry import get_architecture

        config = {k: v for k, v in source_config.items() if k not in ("input_shape", "rate_level", "coded_lmbda", "lmbda")}
        source = get_architecture(card.architecture)(input_shape=model.image_shape, **config)
        source(tf.zeros([1, source.size_multiple, source.size_multiple, model.image_shape[-1]]))
        tf.train.Checkpoint(model=source).read(str(version_dir / "variables" / "variables")).assert_existing_objects_matched()
        model.adopt(source)
        print(f"initialised from {version_dir} ({card.architecture} adopted into {model.architecture})")
        return
    source_levels = sorted(float(v) for v in source_config.get("lmbdas", []))
    other_levels = len(getattr(model, "lmbdas", [])) > 1 and len(source_levels) > 1 and source_levels != model.lmbdas
    source_width = source_config.get("latent_channels")
    other_width = hasattr(model, "adopt") and source_width is not None and source_width != model.latent_channels
    if other_levels or other_width:
        config = {k: v for k, v in source_config.items() if k not in ("input_shape", "rate_level", "coded_lmbda", "lmbda")}
        source = type(model)(input_shape=model.image_shape, **config)
        source(tf.zeros([1, source.size_multiple, source.size_multiple, model.image_shape[-1]]))
        tf.train.Checkpoint(model=source).read(str(version_dir / "variables" / "variables")).assert_existing_objects_matched()
        model.adopt(source)
        changes = []
        if other_levels:
            changes.append(f"rate levels λ {source_levels} -> {model.lmbdas}")
        if other_width:
            changes.append(f"latent channels {source_width} -> {model.latent_channels}")
        print(f"initialised from {version_dir}; {'; '.join(changes)}")
        return
    before = [v.numpy().copy() for v in model.weights]
    status = tf.train.Checkpoint(model=model).read(str(version_dir / "variables" / "variables"))
    try:
        status.assert_existing_objects_matched()
        print(f"initialised from {version_dir}")
        return
    except AssertionError:
        kept = [v.path for v, old in zip(model.weights, before) if np.array_equal(v.numpy(), old)]
        if len(kept) == len(before):
            raise
        print(f"initialised from {version_dir}; not in it, left at their initial values: {', '.join(kept)}")


def _log_steps(writer, sums: dict[str, float], count: int, optimizer: keras.optimizers.Optimizer,
               step: int) -> None:
    """`train/<term>`: the mean of the last `count` steps, and `train/learning_rate` at `step`."""
    with writer.as_default(step=step):
        for key, value in sums.items():
            tf.summary.scalar(f"train/{key}", value / count)
        tf.summary.scalar("train/learning_rate", learning_rate(optimizer))


def _log_projector(log_dir: Path, model: Autoencoder, val_images: np.ndarray, labels: np.ndarray | None,
                   limit: int = 2048) -> None:
    """The embedding projector over the codes of the first validation images (training/projector.py)."""
    from training.projector import most_images, write_projector

    images = val_images[: most_images(val_images.shape[1], val_images.shape[2], limit)]
    codes = np.concatenate([model.encode_latent(tf.constant(batch), training=False).numpy()
                            for batch in eval_batches(images, 256)])
    write_projector(log_dir, codes, images, None if labels is None else labels[: len(images)])


def _log_epoch(writer, model: Autoencoder, record: dict, val_images: np.ndarray, step: int) -> None:
    """Validation scalars and an input|reconstruction grid of the first validation images (the
    training terms are written every few steps by `_log_steps`)."""
    with writer.as_default(step=step):
        for key, value in record.items():
            if key.startswith("val_"):
                tf.summary.scalar(key.replace("_", "/", 1), value)
        sample = val_images[:8]
        recon = np.clip(model(tf.constant(sample), training=False).numpy(), 0, 1)
        tf.summary.image("val/input_vs_reconstruction", np.concatenate([sample, recon], axis=2), max_outputs=8)
    writer.flush()
