"""`python -m training train|evaluate`: train an architecture on a dataset and export it to models_store.

Flags follow the DTB-style convention of DESIGN.md. A flag that the chosen architecture does not take
is an error, not silently ignored.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_DATA_DIR_ENV = "AEC_DATA_DIR"


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"learning_rate\": 1e-3}'")
    return value


def _classes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("classes are comma-separated integer labels, e.g. 3 or 1,7") from None


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers, e.g. 0.0025,0.005,0.01,0.02") from None
    if len(values) < 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError("give at least two positive values")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _devices(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise argparse.ArgumentTypeError("a comma-separated list of devices, e.g. /gpu:0,/gpu:1")
    return devices


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where there is a default and the help does not already state one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and export it as a new version in models_store",
                           formatter_class=_DefaultsFormatter)
    train.add_argument("--model", required=True, help="architecture: single_layer_cae, conv_ae, dense_ae, keras_cae, codec")
    train.add_argument("--dataset", required=True,
                       help="mnist | fashion_mnist | cifar10 (Keras loaders, downloaded) | idx:<dir> | folder:<dir>[,<dir>...]")
    train.add_argument("--data-dir", type=Path, default=os.environ.get(DEFAULT_DATA_DIR_ENV),
                       help=f"read mnist/fashion_mnist (IDX files) or cifar10 (cifar-10-batches-py) from this folder "
                            f"instead of downloading (env {DEFAULT_DATA_DIR_ENV})")
    train.add_argument("--split", type=int, help="with a single t10k IDX pair: first N images train/validate, the rest test")
    train.add_argument("--test-dataset", help="measure on another dataset, e.g. folder:<dir> of held-out photos")
    train.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of the training images held out for validation and threshold calibration")
    train.add_argument("--classes", type=_classes, help="train on these labels only (one-class anomaly models), e.g. 3")
    train.add_argument("--epochs", type=int, default=10,
                       help="passes over the training set (or of --steps-per-epoch); 0 with --init-from: no "
                            "training, only freeze, measure and export (e.g. to re-export a version with "
                            "other coding settings)")
    train.add_argument("--steps-per-epoch", type=int, help="steps per epoch; required for photo folders (endless crops)")
    train.add_argument("--batch-size", type=int, default=64,
                       help="images (or crops) per step: the GLOBAL batch, split evenly over the replicas of "
                            "--strategy mirrored/multi-worker (so it must divide by their number)")
    train.add_argument("--crop", type=int, default=128, help="random crop size for photo folders")
    train.add_argument("--optimizer", default="adam", help="any Keras optimizer name: adam, adamw, sgd, rmsprop...")
    train.add_argument("--optimizer-args", type=_json_object, default={},
                       help='JSON object of optimizer arguments, e.g. \'{"learning_rate": 1e-3}\'')
    train.add_argument("--lr-decay", type=int, metavar="STEP",
                       help="divide the learning rate by 10 from this step of the run on (a resumed run keeps it, "
                            "or takes a new one)")
    train.add_argument("--l2-penalty", type=float, help="L2 weight decay (architectures that take it: single_layer_cae)")
    train.add_argument("--latent-dim", type=int, help="size z of a dense latent (keras_cae, dense_ae)")
    train.add_argument("--lmbda", type=float, help="rate-distortion trade-off λ of the codec (higher: better quality, more bits)")
    train.add_argument("--lmbdas", type=_floats, metavar="L1,L2,...",
                       help="codec: several λ for ONE variable-rate model (per-level gain vectors), exported as "
                            "one SavedModel whose quality input runs from 1 (the first λ) to N (the last); "
                            "qualities between levels interpolate them")
    train.add_argument("--model-args", type=_json_object, default={},
                       help='other architecture arguments as JSON, e.g. \'{"downsample": "strided"}\'')
    train.add_argument("--anomaly-score", choices=["mse", "ssim", "bits", "combined", "complexity"], default="mse",
                       help="anomaly score: reconstruction MSE, 1-SSIM, code length per pixel under the learned "
                            "prior, their sum z-normalised on held-out normal images, or complexity: log MSE "
                            "minus its line on the log PNG size of the image, fitted on held-out normal images "
                            "(Serra et al. 2020; training/complexity.py)")
    train.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate of the anomaly threshold")
    train.add_argument("--threshold-method", choices=["auto", "empirical", "yeo-johnson"], default="auto",
                       help="estimate the threshold quantile from the held-out scores directly, or through a fitted "
                            "Yeo-Johnson normal (auto: the fit when there are fewer than 20 expected false positives)")
    train.add_argument("--seed", type=int, default=0, help="seed for weights, splits, shuffling and crops")
    train.add_argument("--out", type=Path, default=Path("models_store"), help="models_store to export into")
    train.add_argument("--name", help="model name in the store (default: the architecture name)")
    train.add_argument("--description", default="", help="one line for the model card")
    train.add_argument("--log-dir", type=Path, default=Path("runs"), help="TensorBoard runs folder")
    train.add_argument("--log-every", type=_positive_int, default=50, metavar="STEPS",
                       help="TensorBoard: the training loss terms and the learning rate averaged over every STEPS "
                            "steps (validation terms and images once per epoch)")
    train.add_argument("--no-projector", action="store_true",
                       help="do not write TensorBoard's embedding projector (codes of validation images with their "
                            "images and labels; fixed-size models)")
    train.add_argument("--checkpoint-dir", type=Path, help="checkpoint every epoch here and resume from it")
    train.add_argument("--init-from", type=Path,
                       help="start from the weights of an exported version (same --model and arguments)")
    train.add_argument("--skip-bitstreams", action="store_true",
                       help="do not entropy-code the test split to measure real bpp (faster, for benchmarks)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")
    train.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"], default="default",
                       help="tf.distribute: default (one device, the plain loop), mirrored (every local GPU, "
                            "or --devices), multi-worker (several hosts, the cluster from TF_CONFIG; every "
                            "local GPU of each). Checkpoints and export on the chief only")
    train.add_argument("--devices", type=_devices, metavar="DEV,DEV,...",
                       help="--strategy mirrored over these devices, e.g. /gpu:0,/gpu:1 (default: every GPU)")
    train.add_argument("--ema-decay", type=float, metavar="D",
                       help="keep an exponential moving average of the weights (e.g. 0.999) in the checkpoint "
                            "and export it instead of the last step's weights (one device only)")
    train.add_argument("--mixed-precision", nargs="?", const="float16", choices=["float16", "bfloat16"],
                       help="float16 (the default; GPUs only): Keras mixed_float16 compute with a dynamic loss "
                            "scale; bfloat16: mixed_bfloat16, no loss scale, for GPUs from Ampere on and CPUs "
                            "with AVX512-BF16 or AMX. The entropy models, GDN and each sub-network's output "
                            "stay float32; variables, checkpoints and the export are float32")

    evaluate = sub.add_parser("evaluate", help="measure an exported model version on a dataset",
                              formatter_class=_DefaultsFormatter)
    evaluate.add_argument("model_dir", type=Path, help="a version folder, e.g. models_store/mnist/1")
    evaluate.add_argument("--dataset", required=True, help="as for train")
    evaluate.add_argument("--data-dir", type=Path, default=os.environ.get(DEFAULT_DATA_DIR_ENV))
    evaluate.add_argument("--split", type=int)
    evaluate.add_argument("--test-dataset")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="the training run's --seed: a photo folder's test split is drawn by it")
    evaluate.add_argument("--val-fraction", type=float, default=0.1,
                          help="the training run's --val-fraction: a photo folder's test split is sized by it")
    evaluate.add_argument("--quality", type=float, help="variable-rate models: the quality to code at "
                          "(default: the card's default_quality)")
    evaluate.add_argument("--output", type=Path, help="write the metrics JSON here too")
    return parser


# Flags that map onto architecture constructor arguments.
_ARCH_FLAGS = {"latent_dim": "--latent-dim", "lmbda": "--lmbda", "lmbdas": "--lmbdas", "l2_penalty": "--l2-penalty"}


def model_kwargs(parser: argparse.ArgumentParser, args: argparse.Namespace, cls: type) -> dict:
    accepted = set()
    for klass in cls.__mro__:  # constructor arguments of the architecture and of its base classes
        if "__init__" in vars(klass) and klass.__module__.startswith("training."):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    accepted -= {"self", "input_shape", "kwargs"}
    kwargs = {}
    for attr, flag in _ARCH_FLAGS.items():
        value = getattr(args, attr)
        if value is None:
            continue
        if attr not in accepted:
            parser.error(f"{flag} does not apply to --model {args.model} (it takes: {', '.join(sorted(accepted))})")
        kwargs[attr] = value
    for key, value in args.model_args.items():
        if key not in accepted:
            parser.error(f"--model-args key {key!r} does not apply to --model {args.model} "
                         f"(it takes: {', '.join(sorted(accepted))})")
        kwargs[key] = value
    return kwargs


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_train(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> Path | None:
    """Train and export; returns the new version's folder (None on a multi-worker run's non-chief)."""
    from training.models.registry import available, get_architecture

    if args.model not in available():
        parser.error(f"unknown --model {args.model!r}; choose one of {', '.join(available())}")
    cls = get_architecture(args.model)
    kwargs = model_kwargs(parser, args, cls)
    if args.epochs < 0 or args.batch_size < 1:
        parser.error("--epochs must be 0 or more and --batch-size positive")
    if args.epochs == 0 and not (args.init_from or args.checkpoint_dir):
        parser.error("--epochs 0 (freeze, measure and export without training) needs --init-from or --checkpoint-dir")
    if args.ema_decay is not None and not 0.0 < args.ema_decay < 1.0:
        parser.error(f"--ema-decay must lie strictly between 0 and 1 (e.g. 0.999), not {args.ema_decay:g}")
    if args.ema_decay is not None and (args.strategy != "default" or args.devices):
        parser.error("--ema-decay trains on one device only: drop --strategy/--devices or the average")
    strategy = _strategy(parser, args)

    import contextlib

    import keras

    from training import data, distribute
    from training.train import fit, make_optimizer, resumed_step, val_images_for

    keras.utils.set_random_seed(args.seed)
    try:
        splits = data.load(args.dataset, split=args.split, seed=args.seed, classes=args.classes,
                           test_spec=args.test_dataset, data_dir=args.data_dir, val_fraction=args.val_fraction)
        with strategy.scope() if strategy else contextlib.nullcontext():  # variables mirrored, if distributed
            optimizer = make_optimizer(args.optimizer, args.optimizer_args)
            model = cls(input_shape=splits.image_shape(), score_kind=args.anomaly_score, **kwargs)
            if args.mixed_precision == "float16":  # bfloat16 has float32's range: nothing underflows
                optimizer = distribute.with_loss_scale(optimizer)
        if args.mixed_precision:
            policies = distribute.enable_mixed_precision(model, args.mixed_precision)
            print(f"mixed precision: {args.mixed_precision} compute in {len(policies[args.mixed_precision])} layers, "
                  f"float32 outputs in {len(policies['float32'])} (and the entropy models, GDN, the loss)")
        distribute.check_batch(strategy, args.batch_size)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        parser.error(str(exc))
    if not splits.fixed_size and not args.steps_per_epoch:
        parser.error("photo folders stream endless random crops: give --steps-per-epoch")

    name = args.name or args.model
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    log_dir = args.log_dir / f"{name}-{stamp}"
    # A resumed run draws a new crop/shuffle/noise stream (seeded by the step it resumes from): with the
    # run's own seed every resume replayed the same first batches, which the model then saw many times.
    resumed = resumed_step(args.checkpoint_dir)
    stream_seed = args.seed if not resumed else args.seed * 1_000_003 + resumed
    if resumed:
        keras.utils.set_random_seed(stream_seed)  # after the model is built: only the training noise changes
    train_ds = data.train_dataset(splits, args.batch_size, stream_seed, crop=args.crop)
    val_images = val_images_for(model, splits.val, args.crop)
    started = time.time()
    try:
        history = fit(model, train_ds, val_images, epochs=args.epochs, optimizer=optimizer,
                      steps_per_epoch=args.steps_per_epoch, log_dir=log_dir, checkpoint_dir=args.checkpoint_dir,
                      init_from=args.init_from, progress=not args.no_progress, strategy=strategy,
                      log_every=args.log_every, lr_decay=args.lr_decay, ema_decay=args.ema_decay,
                      projector=(splits.val, splits.val_labels) if splits.fixed_size and not args.no_projector else None,
                      dataset_fn=distribute.dataset_fn(splits, args.batch_size, stream_seed, args.crop)
                      if strategy else None)
    except FloatingPointError as exc:
        parser.exit(1, f"error: {exc}\n")
    duration = time.time() - started
    if not distribute.is_chief(strategy):
        print(f"{distribute.describe(strategy)}: trained {history[-1]['steps'] if history else 0} steps; "
              "the chief checkpoints and exports, this worker does not")
        return None
    if strategy or args.mixed_precision:  # export a plain float32 model, not distributed/float16 layers
        model = distribute.plain_copy(
            model, lambda: cls(input_shape=splits.image_shape(), score_kind=args.anomaly_score, **kwargs),
            val_images[:1])

    steps = history[-1]["steps"] if history else (resumed or None)  # a checkpoint exported as it is: its steps
    return _export_version(model, name, args, argv, splits, train_ds, history, steps, duration, stamp, log_dir)


def _strategy(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The tf.distribute strategy of --strategy (None for default), made before any other TensorFlow
    work (multi-worker collectives are configured at program start); --mixed-precision float16 needs a
    GPU, bfloat16 runs anywhere (slower than float32 where neither the CPU nor a GPU has bfloat16 units)."""
    if args.strategy == "default" and not args.devices and not args.mixed_precision:
        return None
    import tensorflow as tf

    from training import distribute

    gpus = tf.config.list_physical_devices("GPU")
    if args.mixed_precision == "float16" and not gpus:
        parser.error("--mixed-precision needs a GPU for float16: TensorFlow sees none here, and float16 on a CPU is "
                     "slower than float32, not faster (train without the flag, or with --mixed-precision bfloat16 "
                     "on a CPU with bfloat16 instructions)")
    if args.mixed_precision == "bfloat16" and not gpus and not distribute.cpu_has_bfloat16():
        print("warning: this CPU reports no bfloat16 instructions (avx512_bf16, amx_bf16): bfloat16 is emulated "
              "there and slower than float32", file=sys.stderr)
    try:
        strategy = distribute.make_strategy(args.strategy, args.devices)
    except ValueError as exc:
        parser.error(str(exc))
    if strategy is not None:
        print(distribute.describe(strategy))
    return strategy


def _per_level_metrics(model, name: str, version: int, images) -> dict[str, float]:
    """A variable-rate model's real bpp and PSNR on `images` at each trained level (quality 1 … L) but
    the default one (the middle level, which the export's own test measurement covers), as
    `bpp_q<l>` / `psnr_q<l>`; leaves the model at its default level."""
    from training.evaluate import coder_from_keras, evaluate

    levels = getattr(model, "num_levels", 1)
    if levels < 2:
        return {}
    metrics = {}
    default = (levels - 1) // 2
    for level in range(levels):
        if level == default:
            continue
        model.set_rate_level(level)
        found = evaluate(coder_from_keras(model, name, version), images).metrics
        metrics |= {f"bpp_q{level + 1}": found["bpp"], f"psnr_q{level + 1}": found["psnr"]}
        per_image = found.get("psnr_per_image_mean")  # what bench/rd.py's tables average
        mean = f", mean per image {per_image:.2f} dB" if per_image is not None else ""
        print(f"quality {level + 1} (λ = {model.lmbda:g}): {found['bpp']:.4f} bpp, "
              f"{found['psnr']:.2f} dB PSNR of the mean MSE{mean}")
    model.set_rate_level(default)
    return metrics


def _export_version(model, name: str, args: argparse.Namespace, argv: list[str], splits, train_ds,
                    history: list[dict], steps: int | None, duration: float, stamp: str, log_dir: Path) -> Path:
    """Freeze the coding state, calibrate, measure on the test split and export the next version."""
    import tensorflow as tf

    from contract.card import ModelCard, Provenance
    from training.calibrate import calibrate
    from training.evaluate import coder_from_keras, evaluate
    from training.export import export_model, next_version
    from training.summary import summary

    print("freezing the coding state (quantiser ranges, entropy tables)...")
    model.finalize(train_ds.take(64) if not splits.fixed_size else
                   tf.data.Dataset.from_tensor_slices(splits.train).batch(256))
    version = next_version(args.out / name)
    per_level = {}
    if getattr(model, "num_levels", 1) > 1 and not args.skip_bitstreams:
        print("measuring each rate level on the test split with real bitstreams...")
        per_level = _per_level_metrics(model, name, version, splits.test)
    elif getattr(model, "num_levels", 1) > 1:
        model.set_rate_level((model.num_levels - 1) // 2)
    coder = coder_from_keras(model, name, version)
    print("calibrating the anomaly threshold on held-out normal images...")
    val_eval = evaluate(coder, splits.calibration_images, with_bpp=False)
    # z-normalise the components on held-out normals (so "combined" means the same in every card), then
    # score again if the model's own score is the combined one
    model.set_score_normalization(val_eval.components)
    calibrated_on = (f"calibration split of {splits.name} ({len(val_eval.scores)} images)" if splits.calibration
                     is not None else f"validation split of {splits.name} ({len(val_eval.scores)} images)")
    # complexity: the line of log mse on log PNG size, fitted on the same held-out normal images
    line = model.set_complexity_fit(val_eval.components) if model.score_kind == "complexity" else None
    coder = coder_from_keras(model, name, version)
    if model.score_kind in ("combined", "complexity"):
        val_eval = evaluate(coder, splits.calibration_images, with_bpp=False)
    anomaly = calibrate(val_eval.scores, target_fpr=args.target_fpr, score=args.anomaly_score,
                        calibrated_on=calibrated_on, normal_classes=args.classes, method=args.threshold_method,
                        complexity=None if line is None else {**line, "fitted_on": calibrated_on})
    print("measuring on the test split with real bitstreams...")
    test_eval = evaluate(coder, splits.test, labels=splits.test_labels, normal_classes=args.classes,
                         with_bpp=not args.skip_bitstreams)
    metrics = dict(test_eval.metrics)
    metrics["observed_fpr_test"] = _observed_fpr(test_eval.scores, splits.test_labels, args.classes,
                                                 anomaly.threshold)
    metrics["normal_test_images"] = _normal_count(splits.test_labels, args.classes, len(test_eval.scores))
    metrics = {k: v for k, v in metrics.items() if v is not None} | per_level
    if per_level:  # the default level was measured above, with everything else
        default = int(model.rate_level.numpy()) + 1
        metrics |= {f"bpp_q{default}": metrics["bpp"], f"psnr_q{default}": metrics["psnr"]}
    metrics["parameters"] = float(sum(int(tf.size(w)) for w in model.trainable_weights))
    card = ModelCard(
        name=name, version=version, architecture=model.architecture, description=args.description,
        config=model.get_config(), input=model.input_spec_card(), latents=model.latent_specs(),
        tables_sha256=model.fingerprint(), anomaly=anomaly, metrics=metrics, rate=model.rate_spec(),
        effort=model.effort_spec(),
        training=Provenance(
            dataset=splits.name + (f" ({'; '.join(f'{k}: {v}' for k, v in splits.notes.items())})" if splits.notes else ""),
            command="python -m training " + shlex.join(argv), epochs=args.epochs,
            steps=steps, seed=args.seed, git_commit=_git_commit(),
            tensorflow_version=tf.__version__, trained_at=stamp, duration_s=round(duration, 1),
            splits=splits.sources or None),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    evaluation = {"test": metrics, "calibration": val_eval.metrics, "history": history, "tensorboard": str(log_dir),
                  "splits": splits.sources, "files": splits.files}
    target = export_model(model, card, args.out, {"evaluation.json": json.dumps(evaluation, indent=2) + "\n"})
    print(json.dumps({"exported": str(target), **{k: round(v, 6) for k, v in metrics.items()}}, indent=2))
    print(summary(target, args, log_dir, card.training.steps, duration, metrics))
    return target


def _normal_count(labels, classes, total: int) -> float:
    import numpy as np

    return float(total if classes is None or labels is None else np.isin(labels, classes).sum())


def _observed_fpr(scores, labels, classes, threshold: float) -> float | None:
    """False-positive rate on normal *test* images (all test images when there are no classes)."""
    import numpy as np

    normal = np.ones(len(scores), bool) if classes is None or labels is None else np.isin(labels, classes)
    return float(np.mean(scores[normal] > threshold)) if normal.any() else None


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    from contract.card import ModelCard
    from training import data
    from training.evaluate import coder_from_saved_model, evaluate

    try:
        card = ModelCard.read(args.model_dir)
        splits = data.load(args.dataset, split=args.split, test_spec=args.test_dataset, data_dir=args.data_dir,
                           seed=args.seed, val_fraction=args.val_fraction)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    classes = card.anomaly.normal_classes if card.anomaly else None
    try:
        coder = coder_from_saved_model(args.model_dir, args.quality)
    except ValueError as exc:
        parser.error(str(exc))
    result = evaluate(coder, splits.test, labels=splits.test_labels, normal_classes=classes)
    metrics = result.metrics
    if card.anomaly:
        metrics["observed_fpr_test"] = _observed_fpr(result.scores, splits.test_labels, classes, card.anomaly.threshold)
    from contract.card import quality_value

    quality = quality_value(coder.quality_hundredths)
    text = json.dumps({"model": card.name, "version": card.version, **({} if quality is None else {"quality": quality}),
                       "dataset": splits.name, **metrics}, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        run_train(parser, args, argv)
    else:
        run_evaluate(parser, args)
    return 0
