"""Export a finalized Autoencoder as a SavedModel + model card into `<store>/<name>/<version>/`.

Export is its own step (CompressAI's update_model, TFC's compression=True): it refuses a model whose
coding state is not frozen, writes the signatures of DESIGN.md into a temporary directory and renames it
into place, so the service's hot reload never sees a half-written version.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from contract.card import ModelCard
from training.models.base import Autoencoder

#: Variables in shards of at most 8 MiB: a model checked into git stays in files a repository host takes
#: without large-file storage (codec v2's 14.7 MB of weights are two files); loading reads them all alike.
SAVE_OPTIONS = tf.saved_model.SaveOptions(
    experimental_sharding_callback=tf.train.experimental.MaxShardSizePolicy(max_shard_size=8 << 20))


def next_version(model_dir: Path) -> int:
    """Next free integer version under `<store>/<name>/` (TF Serving layout; never overwrite)."""
    existing = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def build_module(model: Autoencoder) -> tf.Module:
    """A tf.Module carrying the model's variables and one tf.function per served signature."""
    if not model.finalized:
        raise ValueError("export refuses a model that was not finalized (no frozen quantiser/entropy tables)")
    h, w, c = model.image_shape
    image_spec = tf.TensorSpec([None, h, w, c], tf.float32, name="images")
    specs = model.latent_specs()
    int_specs = []
    for spec in specs:
        dims = [None, *spec.shape] if spec.shape else [None, None, None, spec.channels]
        int_specs.append(tf.TensorSpec(dims, tf.int32, name=spec.name))
    names = [spec.name for spec in specs]

    module = tf.Module()
    module.model = model
    # Every variable, tracked explicitly: weights a model keeps on helper objects (codec_cc's integer
    # layers) are not reachable through Keras' own attribute tracking.
    module.model_variables = list(model.variables)
    # autograph=False: the model code has no tensor-dependent Python control flow, and autograph would
    # re-read source files from disk at trace time (wrong functions if they changed since import).
    function = functools.partial(tf.function, autograph=False)

    def as_images(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"images": tf.clip_by_value(x, 0.0, 1.0)}

    if model.rate_spec() is None:
        module.encode = function(lambda images: model.encode(images), input_signature=[image_spec])
        module.decode = function(
            lambda *latents: as_images(model.decode(dict(zip(names, latents)))), input_signature=int_specs
        )
        module.reconstruct = function(lambda images: as_images(model.reconstruct(images)),
                                      input_signature=[image_spec])
    else:  # variable rate: one more input, the quality of each image [B]
        quality = tf.TensorSpec([None], tf.float32, name="quality")
        module.encode = function(lambda images, q: model.encode(images, q), input_signature=[image_spec, quality])
        module.decode = function(
            lambda *args: as_images(model.decode(dict(zip(names, args[:-1])), args[-1])),
            input_signature=[*int_specs, quality],
        )
        module.reconstruct = function(lambda images, q: as_images(model.reconstruct(images, q)),
                                      input_signature=[image_spec, quality])
        if model.effort_spec() is not None:
            effort = tf.TensorSpec([None], tf.int32, name="effort")
            module.encode_refined = function(lambda images, q, e: model.encode_refined(images, q, e),
                                             input_signature=[image_spec, quality, effort])
    module.anomaly_score = function(lambda images: model.anomaly_score(images), input_signature=[image_spec])
    tables = {name: tf.constant(value) for name, value in model.entropy_tables().items()}
    module.entropy_tables = function(lambda: {k: tf.identity(v) for k, v in tables.items()}, input_signature=[])
    signatures = {
        "encode": module.encode.get_concrete_function(),
        "decode": module.decode.get_concrete_function(),
        "reconstruct": module.reconstruct.get_concrete_function(),
        "serving_default": module.reconstruct.get_concrete_function(),
        "anomaly_score": module.anomaly_score.get_concrete_function(),
        "entropy_tables": module.entropy_tables.get_concrete_function(),
    }
    if model.effort_spec() is not None:
        signatures[model.effort_spec().signature] = module.encode_refined.get_concrete_function()
    for stage, (stage_specs, fn) in model.parameter_stages().items():
        traced = function(_by_name(fn, [spec.name for spec in stage_specs]), input_signature=stage_specs)
        setattr(module, stage, traced)
        signatures[stage] = traced.get_concrete_function()
    module.signatures_to_save = signatures
    return module


def _by_name(fn, names: list[str]):
    """fn(dict) as a function of positional tensors (a closure: tf.function would take default
    arguments of a lambda for inputs of the signature)."""
    return lambda *args: fn(dict(zip(names, args)))


def export_model(model: Autoencoder, card: ModelCard, store: Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write SavedModel + model.json (+ extra text files, e.g. evaluation.json) atomically; returns the version dir."""
    target = Path(store) / card.name / str(card.version)
    if target.exists():
        raise FileExistsError(f"{target} exists: published versions are never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    module = build_module(model)
    staging = Path(tempfile.mkdtemp(prefix=f".{card.name}-{card.version}-", dir=target.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures_to_save, options=SAVE_OPTIONS)
        card.write(staging)
        for filename, text in (extra_files or {}).items():
            (staging / filename).write_text(text)
        # mkdtemp makes the staging folder 0700: published, it must be as readable as any folder made
        # here (the umask's mode), or a service running as another user (the image's uid 10001, a shared
        # store) cannot enter the new version.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
