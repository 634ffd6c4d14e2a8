"""`python -m training train --strategy mirrored|multi-worker [--mixed-precision [float16|bfloat16]]` on CPU.

Logical devices must be configured before TensorFlow initialises, and a multi-worker cluster at program
start, so the training runs are subprocesses (with timeouts) of the real CLI on a tiny IDX dataset.

Tolerance of the mirrored-vs-one-device comparison: relative 1e-4 on every loss term. Both runs see the
same images at every step (the global batch of 32 split into two halves of 16 in order), so they differ
only by float32 rounding: the gradient is the mean of two half-batch means instead of one batch mean,
summed in another order, and Eigen's convolutions tile a batch of 16 differently from 32. That is about
1e-7 relative per step (float32 has a 6e-8 unit roundoff); Adam divides by sqrt(v) and can amplify it
over a few steps, but not by three orders of magnitude. Real mistakes move the losses by far more than
1e-4: gradients summed instead of averaged (twice the step) or clipped per replica (each replica's half
gradient) change them by 1e-2 and more within these steps (the measured figures are in
docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from idx_files import write_idx

from contract.card import ModelCard
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4
TIMEOUT_S = 300

# Runs training.cli.main once per argv list in sys.argv[1] (JSON), on AEC_TEST_CPUS logical CPU devices.
RUNNER = """
import json, os, sys
import tensorflow as tf
cpus = int(os.environ.get("AEC_TEST_CPUS", "1"))
if cpus > 1:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * cpus)
from training.cli import main
for argv in json.loads(sys.argv[1]):
    assert main(argv) == 0
"""


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    """120 tiny t10k-style 16×16 digits: bright squares and bars at random places."""
    rng = np.random.default_rng(0)
    images = np.zeros((120, 16, 16), np.uint8)
    for i, img in enumerate(images):
        y, x = rng.integers(1, 8, 2)
        if i % 2:
            img[y : y + 7, x : x + 7] = 255
        else:
            img[y : y + 8, x + 2 : x + 5] = 255
    folder = tmp_path_factory.mktemp("idx")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(120) % 2).astype(np.uint8))
    return folder


def train_args(idx_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--model", "conv_ae", "--model-args", '{"filters": [8, 16], "latent_channels": 4}',
            "--dataset", f"idx:{idx_dir}", "--split", "100", "--val-fraction", "0.2", "--batch-size", "32",
            "--seed", "3", "--out", str(out), "--name", name, "--log-dir", str(out.parent / f"{out.name}-runs"), "--no-progress",
            "--skip-bitstreams", *extra]


def run(runs: list[list[str]], cpus: int = 1, env: dict | None = None, wait: bool = True):
    environment = {**os.environ, "AEC_TEST_CPUS": str(cpus), "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-c", RUNNER, json.dumps(runs)]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=TIMEOUT_S,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def history(store: Path, name: str) -> list[dict]:
    return json.loads((store / name / "1" / "evaluation.json").read_text())["history"]


def relative_differences(one: list[dict], other: list[dict]) -> dict[str, float]:
    keys = [k for k in one[0] if k.startswith(("train_", "val_"))]
    return {k: max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(one, other)) for k in keys}


def test_mirrored_over_two_cpus_matches_one_device(idx_dir, tmp_path):
    """Four steps (one per epoch, so each epoch's train loss is one step's), with Adam, and with SGD under
    a global clip norm small enough to clip every step (clipping per replica would differ)."""
    configs = {"adam": ["--optimizer", "adam", "--optimizer-args", '{"learning_rate": 0.003}'],
               "sgd-clip": ["--optimizer", "sgd", "--optimizer-args", '{"learning_rate": 0.5, "global_clipnorm": 0.05}']}
    steps = ["--epochs", "4", "--steps-per-epoch", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    run([train_args(idx_dir, one, name, *steps, *args) for name, args in configs.items()], cpus=2)
    out = run([train_args(idx_dir, two, name, *steps, *args, "--strategy", "mirrored", "--devices", "/cpu:0,/cpu:1")
               for name, args in configs.items()], cpus=2)
    assert "MirroredStrategy: 2 replicas in sync" in out
    report = {}
    for name in configs:
        single, mirrored = history(one, name), history(two, name)
        assert [h["steps"] for h in single] == [h["steps"] for h in mirrored] == [1, 2, 3, 4]
        assert single[0]["train_loss"] != single[-1]["train_loss"]  # it trained
        report[name] = relative_differences(single, mirrored)
        card_one, card_two = ModelCard.read(one / name / "1"), ModelCard.read(two / name / "1")
        report[name]["test_mse"] = abs(card_one.metrics["mse"] - card_two.metrics["mse"]) / card_one.metrics["mse"]
        assert "--strategy mirrored" in card_two.training.command
    print("largest relative differences, mirrored (2 CPUs) vs one device:", json.dumps(report, indent=1))
    for name, differences in report.items():
        assert max(differences.values()) < TOLERANCE, (name, differences)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_multi_worker_on_loopback_trains_and_the_chief_alone_exports(idx_dir, tmp_path):
    workers = [f"localhost:{free_port()}", f"localhost:{free_port()}"]
    store, ckpt = tmp_path / "store", tmp_path / "ckpt"
    argv = train_args(idx_dir, store, "mw", "--epochs", "2", "--strategy", "multi-worker",
                      "--checkpoint-dir", str(ckpt))
    scratch = [tmp_path / f"tmp{i}" for i in range(2)]
    procs = []
    for index in range(2):
        scratch[index].mkdir()
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(run([argv], env={"TF_CONFIG": json.dumps(config), "TMPDIR": str(scratch[index])}, wait=False))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-6000:]
    chief, worker = outputs
    assert "MultiWorkerMirroredStrategy: 2 replicas in sync" in chief and "task worker:0 (chief)" in chief
    assert "task worker:1" in worker and "this worker does not" in worker
    assert "exported" in chief and "exported" not in worker
    # exactly one version, from the chief; each step took 32 images, 16 per worker: 80 / 32 = 2 per epoch
    assert sorted(p.relative_to(store).as_posix() for p in store.glob("*/*")) == ["mw/1"]
    assert len(list((tmp_path / "store-runs").iterdir())) == 1  # TensorBoard: the chief's run only
    card = ModelCard.read(store / "mw" / "1")
    assert card.training.steps == 4 and "--strategy multi-worker" in card.training.command
    # checkpoints: the chief's, in --checkpoint-dir; the other worker's scratch copy is gone
    assert (ckpt / "checkpoint").is_file()
    assert not list(scratch[1].glob("aec-worker-ckpt-*"))

    import tensorflow as tf

    loaded = tf.saved_model.load(str(store / "mw" / "1"))
    images = tf.random.uniform([2, 16, 16, 1], seed=1)
    reconstruction = loaded.signatures["reconstruct"](images=images)["images"]
    assert reconstruction.shape == (2, 16, 16, 1) and reconstruction.dtype == tf.float32
    symbols = loaded.signatures["encode"](images=images)
    assert all(v.dtype == tf.int32 for v in symbols.values())


@pytest.mark.parametrize("flags, message", [
    (["--devices", "/cpu:0"], "--devices needs --strategy mirrored"),
    (["--strategy", "multi-worker"], "TF_CONFIG environment variable, which is not set"),
    (["--strategy", "multi-worker", "--devices", "/cpu:0"], "--devices applies to --strategy mirrored only"),
])
def test_strategy_flags_give_clear_errors(idx_dir, tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(idx_dir, tmp_path, "x", *flags))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_mixed_precision_is_refused_without_a_gpu(idx_dir, tmp_path, capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the flag is accepted")
    with pytest.raises(SystemExit):
        main(train_args(idx_dir, tmp_path, "x", "--mixed-precision"))
    assert "--mixed-precision needs a GPU for float16" in capsys.readouterr().err


def test_the_global_batch_must_divide_over_the_replicas():
    from training.distribute import check_batch

    check_batch(SimpleNamespace(num_replicas_in_sync=4), 64)
    with pytest.raises(ValueError, match="--batch-size 30 is the global batch.*4 replicas"):
        check_batch(SimpleNamespace(num_replicas_in_sync=4), 30)


def test_help_says_the_batch_is_global():
    out = subprocess.run([sys.executable, "-m", "training", "train", "--help"], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=120).stdout
    assert "GLOBAL batch" in out and "--strategy" in out and "--mixed-precision" in out and "TF_CONFIG" in out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("architecture, kwargs, size", [
    ("conv_ae", {"filters": [8, 16], "latent_channels": 4}, 16),
    ("codec", {"num_filters": 8, "latent_channels": 12, "lmbdas": [0.004, 0.03]}, 64),
])
def test_mixed_precision_keeps_outputs_and_entropy_models_float32(architecture, kwargs, size, dtype):
    """On CPU (float16 is slow there, but it runs): inner convolutions compute in `dtype`, every output the
    model code rounds, feeds to a likelihood or a loss is float32, a step trains (float16 loss-scaled),
    and the export copy is all float32 with the same weights."""
    import keras
    import tensorflow as tf

    from training import distribute
    from training.models.registry import get_architecture
    from training.train import make_optimizer, make_train_step

    keras.utils.set_random_seed(0)
    cls = get_architecture(architecture)
    channels = 1 if architecture == "conv_ae" else 3
    factory = lambda: cls(input_shape=(size, size, channels) if architecture == "conv_ae" else (None, None, 3),
                          **kwargs)
    model = factory()
    images = tf.random.uniform([2, size, size, channels], seed=0)
    policies = distribute.enable_mixed_precision(model, dtype)  # before the model is built, as the CLI does
    model(images[:1])
    assert policies[dtype] and policies["float32"]
    half = {f"{c.name}/{layer.name}": layer for c in distribute._containers(model) for layer in c.layers
            if f"{c.name}/{layer.name}" in policies[dtype]}
    assert len(half) == len(policies[dtype]) and all(layer.compute_dtype == dtype for layer in half.values())
    rest = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if not any(layer is chosen for chosen in half.values())]
    assert rest and all(layer.compute_dtype == "float32" for layer in rest)
    assert all(v.dtype == "float32" for v in model.variables if "float" in v.dtype)
    if architecture == "codec":
        y = model.g_a(images)
        assert y.dtype == tf.float32 and model.h_s(model.h_a(y)).dtype == tf.float32
        assert all(layer.compute_dtype == "float32" for layer in model.g_a.layers if "gdn" in layer.name.lower())
    optimizer = make_optimizer("adam", {"learning_rate": 1e-3})
    if dtype == "float16":
        optimizer = distribute.with_loss_scale(optimizer)
    step = make_train_step(model, optimizer, traced=False)
    before = [v.numpy().copy() for v in model.trainable_variables]
    # The dynamic loss scale starts at 2^15 and halves on every step whose gradients overflow float16 (the
    # step is skipped): the codec's loss, λ·255²·MSE + bpp, is in the hundreds, so it settles at 2^8 after
    # about 8 steps (measured); conv_ae's cross-entropy trains from the first step. bfloat16 has float32's
    # exponent range: every step applies.
    losses = [step(images) for _ in range(12)]
    assert all(v.dtype == tf.float32 and np.isfinite(v.numpy()) for loss in losses for v in loss.values())
    if dtype == "float16":
        assert int(optimizer.iterations.numpy()) >= 3 and float(optimizer.dynamic_scale.numpy()) >= 1
    else:
        assert int(optimizer.iterations.numpy()) == 12
        assert float(losses[-1]["loss"]) < float(losses[0]["loss"])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    copy = distribute.plain_copy(model, factory, images[:1].numpy())
    assert all(layer.compute_dtype == "float32" for layer in copy._flatten_layers(include_self=False, recursive=True))
    for a, b in zip(model.variables, copy.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bfloat16_resumes_a_float32_checkpoint_and_exports_float32(idx_dir, tmp_path):
    """The CLI on the CPU: a float32 run's checkpoint goes on under --mixed-precision bfloat16 (the same
    variables, no loss-scale entry), and the export is a plain float32 SavedModel the service loads."""
    import tensorflow as tf

    store, ckpt = tmp_path / "store", tmp_path / "ckpt"
    out = run([train_args(idx_dir, store, "fp32", "--epochs", "1", "--checkpoint-dir", str(ckpt)),
               train_args(idx_dir, store, "bf16", "--epochs", "2", "--checkpoint-dir", str(ckpt),
                          "--mixed-precision", "bfloat16")])
    assert "resumed from" in out and "mixed precision: bfloat16 compute in" in out
    fp32, bf16 = history(store, "fp32"), history(store, "bf16")
    assert [h["steps"] for h in fp32] == [2] and [h["steps"] for h in bf16] == [4]  # 80 images, batch 32
    assert np.isfinite(bf16[-1]["train_loss"]) and bf16[-1]["train_loss"] < fp32[0]["train_loss"]
    card = ModelCard.read(store / "bf16" / "1")
    assert "--mixed-precision bfloat16" in card.training.command
    loaded = tf.saved_model.load(str(store / "bf16" / "1"))
    images = tf.random.uniform([2, 16, 16, 1], seed=1)
    reconstruction = loaded.signatures["reconstruct"](images=images)["images"]
    assert reconstruction.dtype == tf.float32 and reconstruction.shape == (2, 16, 16, 1)


MIXED_MIRRORED = """
import json, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from training import data, distribute
from training.models.registry import get_architecture
from training.train import fit, make_optimizer

keras.utils.set_random_seed(0)
strategy = distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
images = np.random.default_rng(0).random((32, 16, 16, 1), dtype=np.float32)
splits = data.Splits("random", images, images[:4], images[:4])
factory = lambda: get_architecture("conv_ae")(input_shape=(16, 16, 1), filters=[8, 16], latent_channels=4)
with strategy.scope():
    optimizer = distribute.with_loss_scale(make_optimizer("adam", {"learning_rate": 1e-3, "global_clipnorm": 1.0}))
    model = factory()
policies = distribute.enable_mixed_precision(model)
history = fit(model, data.train_dataset(splits, 8, 0), images[:4], epochs=2, optimizer=optimizer, progress=False,
              strategy=strategy, dataset_fn=distribute.dataset_fn(splits, 8, 0, None), checkpoint_dir=sys.argv[1])
copy = distribute.plain_copy(model, factory, images[:1])
print(json.dumps({"history": history, "iterations": int(optimizer.iterations.numpy()),
                  "float16": policies["float16"],
                  "copy_float32": all(layer.compute_dtype == "float32"
                                      for layer in copy._flatten_layers(include_self=False, recursive=True)),
                  "same_weights": all(np.array_equal(a.numpy(), b.numpy())
                                      for a, b in zip(model.variables, copy.variables))}))
"""


def test_mixed_precision_under_mirrored_trains_and_checkpoints(tmp_path):
    """The CLI refuses --mixed-precision without a GPU, so this drives `fit` itself: loss scale, our
    all-reduce and the loss-scale checkpoint entry together, on two logical CPUs."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", MIXED_MIRRORED, str(tmp_path / "ckpt")], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [h["steps"] for h in found["history"]] == [4, 8] and found["iterations"] == 8  # no step skipped
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in found["history"])
    assert "encoder/block0_conv1" in found["float16"] and "encoder/latent" not in found["float16"]
    assert found["copy_float32"] and found["same_weights"]
    import tensorflow as tf

    names = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(tmp_path / "ckpt")))]
    assert any(name.startswith("loss_scale/") for name in names)  # the dynamic scale is saved with the run
    assert any(name.startswith("optimizer/") for name in names)  # the optimizer where a float32 run has it
