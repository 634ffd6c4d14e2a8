"""`python -m training`: flags, IDX datasets, export layout and the card written for the service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from idx_files import write_shapes_idx

from contract.card import ModelCard
from training.cli import main
from training.data import read_idx

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    """A tiny t10k-style IDX pair of squares (label 0) and bars (label 1)."""
    return write_shapes_idx(tmp_path_factory.mktemp("idx"))


def test_idx_reader_round_trips(idx_dir):
    images = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (240, 28, 28) and images.dtype == np.uint8 and images.max() == 255


def test_train_exports_a_served_version_with_card(idx_dir, tmp_path):
    store = tmp_path / "store"
    argv = ["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--epochs", "2",
            "--batch-size", "32", "--latent-dim", "8", "--optimizer", "adam",
            "--optimizer-args", '{"learning_rate": 0.003}', "--out", str(store), "--name", "digits",
            "--log-dir", str(tmp_path / "runs"), "--no-progress", "--seed", "1"]
    assert main(argv) == 0
    assert main(argv) == 0  # a second run never overwrites: it becomes version 2
    version_dir = store / "digits" / "2"
    card = ModelCard.read(version_dir)
    assert (version_dir / "saved_model.pb").is_file() and (store / "digits" / "1" / "saved_model.pb").is_file()
    # published as readable as the umask allows (not mkdtemp's 0700): a service running as another user reads it
    umask = os.umask(0)
    os.umask(umask)
    assert version_dir.stat().st_mode & 0o777 == 0o777 & ~umask
    assert card.name == "digits" and card.version == 2 and card.architecture == "keras_cae"
    assert card.config["latent_dim"] == 8
    assert card.input.height == 28 and card.input.channels == 1 and card.input.size_policy == "resize"
    assert card.training.command.startswith("python -m training train --model keras_cae")
    assert card.training.seed == 1 and card.training.epochs == 2
    assert card.metrics["images"] == 40  # the last 40 of 240 images are the test split
    assert 0 < card.metrics["mse"] < 0.25 and card.metrics["bpp"] > 0
    # the threshold is the 99% quantile of held-out normal scores
    assert card.anomaly.threshold >= card.anomaly.calibration.quantiles["0.5"]
    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    assert len(evaluation["history"]) == 2
    assert list((tmp_path / "runs").glob("digits-*/events.out.tfevents.*")), "TensorBoard events are written"

    # `evaluate` measures the exported artifact alone and agrees with what training recorded.
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(version_dir), "--dataset", f"idx:{idx_dir}", "--split", "200",
                 "--output", str(out)]) == 0
    measured = json.loads(out.read_text())
    assert measured["mse"] == pytest.approx(card.metrics["mse"], rel=1e-4)
    assert measured["bpp"] == pytest.approx(card.metrics["bpp"], rel=1e-6)


def test_training_continues_from_an_exported_version(idx_dir, tmp_path):
    common = ["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--batch-size", "32",
              "--latent-dim", "4", "--out", str(tmp_path), "--log-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main([*common, "--epochs", "3"]) == 0
    first = json.loads((tmp_path / "keras_cae" / "1" / "evaluation.json").read_text())["history"]
    assert main([*common, "--epochs", "1", "--init-from", str(tmp_path / "keras_cae" / "1"),
                 "--optimizer-args", '{"learning_rate": 1e-6}']) == 0
    resumed = json.loads((tmp_path / "keras_cae" / "2" / "evaluation.json").read_text())["history"]
    # with a tiny learning rate the continued model stays where the first run ended, far from a fresh start
    assert resumed[0]["val_mse"] == pytest.approx(first[-1]["val_mse"], rel=0.05)
    assert resumed[0]["val_mse"] < first[0]["val_mse"]


def test_a_resumed_run_continues_its_step_with_a_new_data_stream(idx_dir, tmp_path, monkeypatch):
    """Resuming from --checkpoint-dir restores the step, and the crops/shuffle are drawn anew: with the
    run's own seed every resume replayed the same first batches."""
    from training import data
    from training.train import resumed_step

    seeds: list[int] = []
    real = data.train_dataset

    def recording(splits, batch_size, seed, crop=None):
        seeds.append(seed)
        return real(splits, batch_size, seed, crop=crop)

    monkeypatch.setattr(data, "train_dataset", recording)
    ckpt = tmp_path / "ckpt"
    common = ["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--batch-size", "32",
              "--latent-dim", "4", "--out", str(tmp_path), "--log-dir", str(tmp_path / "runs"), "--no-progress",
              "--checkpoint-dir", str(ckpt)]
    assert resumed_step(ckpt) == 0
    assert main([*common, "--epochs", "1"]) == 0
    steps = json.loads((tmp_path / "keras_cae" / "1" / "evaluation.json").read_text())["history"][-1]["steps"]
    assert steps > 0 and resumed_step(ckpt) == steps
    assert main([*common, "--epochs", "2"]) == 0
    history = json.loads((tmp_path / "keras_cae" / "2" / "evaluation.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [2] and history[-1]["steps"] == 2 * steps
    assert seeds[0] == 0 and seeds[1] not in (0, seeds[0])
    # exporting the checkpoint as it is (its own epoch: no step runs) records the steps that made it
    assert main([*common, "--epochs", "2"]) == 0
    card = json.loads((tmp_path / "keras_cae" / "3" / "model.json").read_text())
    assert card["training"]["steps"] == 2 * steps and card["training"]["epochs"] == 2


def test_a_run_resumed_with_a_learning_rate_drop_keeps_its_optimizer_state(idx_dir, tmp_path):
    """The codec v2 run went NaN at its first step when resumed with --lr-decay: a Keras schedule has no
    learning-rate variable, so every Adam slot was read from its neighbour's place in the checkpoint.
    Now the drop assigns the rate, the optimizer's variables are the same with or without it, and the
    momenta come back as they were saved."""
    import tensorflow as tf

    ckpt = tmp_path / "ckpt"
    common = ["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--batch-size", "32",
              "--latent-dim", "4", "--optimizer-args", '{"learning_rate": 0.002}', "--out", str(tmp_path),
              "--log-dir", str(tmp_path / "runs"), "--no-progress", "--checkpoint-dir", str(ckpt)]
    assert main([*common, "--epochs", "1"]) == 0
    saved = tf.train.load_checkpoint(str(ckpt))
    steps = saved.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
    assert saved.get_tensor("optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(0.002)
    assert main([*common, "--epochs", "2", "--lr-decay", str(steps)]) == 0
    history = json.loads((tmp_path / "keras_cae" / "2" / "evaluation.json").read_text())["history"]
    assert np.isfinite(history[-1]["train_loss"]) and history[-1]["steps"] == 2 * steps
    resumed = tf.train.load_checkpoint(str(ckpt))
    assert resumed.get_tensor("optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(0.0002)
    assert sorted(resumed.get_variable_to_shape_map().items()) == sorted(saved.get_variable_to_shape_map().items())
    # resumed again without the drop: the command line's rate, not the dropped one the checkpoint holds
    assert main([*common, "--epochs", "3"]) == 0
    again = tf.train.load_checkpoint(str(ckpt))
    assert again.get_tensor("optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(0.002)


def test_a_diverging_run_stops_before_it_checkpoints(idx_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--epochs", "1",
              "--batch-size", "32", "--latent-dim", "4", "--optimizer", "sgd",
              "--optimizer-args", '{"learning_rate": 1e30}', "--out", str(tmp_path), "--log-dir", str(tmp_path / "runs"),
              "--no-progress", "--checkpoint-dir", str(ckpt)])
    assert stopped.value.code == 1
    assert "training diverged at step" in capsys.readouterr().err
    assert not list(ckpt.glob("ckpt-*")) and not (tmp_path / "keras_cae").exists()


def test_one_class_training_records_normal_classes(idx_dir, tmp_path):
    assert main(["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200",
                 "--epochs", "1", "--batch-size", "16", "--latent-dim", "4", "--classes", "0",
                 "--out", str(tmp_path), "--log-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    card = ModelCard.read(tmp_path / "keras_cae" / "1")
    assert card.anomaly.normal_classes == [0]
    assert "auroc" in card.metrics and "observed_fpr_test" in card.metrics


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope", "--dataset", "mnist"], "unknown --model 'nope'"),
    (["--model", "keras_cae", "--dataset", "mnist", "--lmbda", "0.1"], "--lmbda does not apply to --model keras_cae"),
    (["--model", "keras_cae", "--dataset", "mnist", "--optimizer-args", "{bad"], "not valid JSON"),
    (["--model", "keras_cae", "--dataset", "mnist", "--model-args", '{"depth": 3}'], "'depth' does not apply"),
    (["--model", "keras_cae", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--model", "keras_cae", "--dataset", "idx:/does/not/exist"], "does not exist"),
])
def test_bad_flags_give_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "training", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ["--model", "--dataset", "--data-dir", "--epochs", "--batch-size", "--optimizer",
                 "--optimizer-args", "--l2-penalty", "--latent-dim", "--lmbda", "--seed", "--out", "--name"]:
        assert flag in out


def test_variable_rate_codec_exports_one_model_with_a_quality_input(tmp_path, capsys):
    from PIL import Image

    from training.evaluate import coder_from_saved_model, evaluate

    rng = np.random.default_rng(0)
    for folder, count, size in (("train", 6, 96), ("test", 2, 70)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            y, x = np.mgrid[0:size, 0:size]
            pixels = 127 + 100 * np.sin(x / rng.uniform(3, 9) + y / rng.uniform(3, 9) + np.arange(3)[:, None, None])
            Image.fromarray(pixels.transpose(1, 2, 0).astype(np.uint8)).save(tmp_path / folder / f"{i}.png")
    common = ["train", "--model", "codec", "--dataset", f"folder:{tmp_path / 'train'}",
              "--test-dataset", f"folder:{tmp_path / 'test'}", "--epochs", "1", "--steps-per-epoch", "3",
              "--batch-size", "2", "--crop", "64", "--model-args", '{"num_filters": 8, "latent_channels": 12}',
              "--out", str(tmp_path / "store"), "--log-dir", str(tmp_path / "runs"), "--no-progress", "--name", "photo"]
    assert main([*common, "--lmbdas", "0.004,0.03", "--lr-decay", "2", "--val-fraction", "0.34"]) == 0
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["photo"]
    card = ModelCard.read(tmp_path / "store" / "photo" / "1")
    assert card.rate is not None and card.rate.lmbdas == [0.004, 0.03] and card.rate.default_quality == 1.0
    # real streams on the test photos at each level; the default quality's figures are the card's bpp
    assert card.metrics["bpp_q1"] < card.metrics["bpp_q2"] and card.metrics["psnr_q1"] < card.metrics["psnr_q2"]
    assert card.metrics["bpp"] == pytest.approx(card.metrics["bpp_q1"])
    # the other level's line names both PSNRs: of the mean MSE (the card's) and the per-image mean (rd.py's)
    printed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quality 2 "))
    assert f"{card.metrics['psnr_q2']:.2f} dB PSNR of the mean MSE, mean per image " in printed
    test_images = np.stack([np.asarray(Image.open(tmp_path / "test" / f"{i}.png"), np.float32) / 255 for i in (0, 1)])
    exported = [evaluate(coder_from_saved_model(tmp_path / "store" / "photo" / "1", q), test_images).metrics
                for q in (1, 1.5, 2)]
    assert exported[0]["bpp"] == pytest.approx(card.metrics["bpp_q1"])  # the SavedModel codes as training measured
    assert exported[2]["bpp"] == pytest.approx(card.metrics["bpp_q2"])
    assert exported[0]["bpp"] < exported[1]["bpp"] < exported[2]["bpp"]
    with pytest.raises(ValueError, match="quality must lie in"):
        coder_from_saved_model(tmp_path / "store" / "photo" / "1", 2.5)
    # a single-rate codec continues into a multi-rate one: the gains are new, everything else is loaded
    assert main([*common[:-2], "--name", "single", "--lmbda", "0.01"]) == 0
    capsys.readouterr()
    assert main([*common[:-2], "--name", "multi", "--lmbdas", "0.005,0.02",
                 "--init-from", str(tmp_path / "store" / "single" / "1")]) == 0
    kept = capsys.readouterr().out.split("not in it, left at their initial values:")[1].splitlines()[0]
    assert "log_gain" in kept and "analysis" not in kept and "z_density" not in kept
    # ... and a multi-rate one into one with more levels (a rate added below the trained ones)
    assert main([*common[:-2], "--name", "more", "--lmbdas", "0.002,0.004,0.03",
                 "--init-from", str(tmp_path / "store" / "photo" / "1")]) == 0
    assert "rate levels λ [0.004, 0.03] -> [0.002, 0.004, 0.03]" in capsys.readouterr().out
    assert ModelCard.read(tmp_path / "store" / "more" / "1").rate.lmbdas == [0.002, 0.004, 0.03]
    # ... and into a wider latent (new channels start silent) with more levels at once
    wide_args = [*common[:-2], "--name", "wide", "--lmbdas", "0.002,0.004,0.03",
                 "--init-from", str(tmp_path / "store" / "photo" / "1")]
    wide_args[wide_args.index("--model-args") + 1] = '{"num_filters": 8, "latent_channels": 16}'
    assert main(wide_args) == 0
    assert ("rate levels λ [0.004, 0.03] -> [0.002, 0.004, 0.03]; latent channels 12 -> 16"
            in capsys.readouterr().out)
    assert ModelCard.read(tmp_path / "store" / "wide" / "1").config["latent_channels"] == 16


@pytest.mark.parametrize("value", ["0.01", "0.01,-1", "a,b"])
def test_lmbdas_needs_two_positive_numbers(value, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "codec", "--dataset", "mnist", "--lmbdas", value])
    assert "--lmbdas" in capsys.readouterr().err


def test_exporting_a_checkpoint_without_training_is_quiet(idx_dir, tmp_path):
    """`--epochs 0` (or no epoch left) from a checkpoint freezes and exports without training: the
    optimizer's slots are never built, and TensorFlow used to print one "Value in checkpoint could not
    be found" warning per Adam slot at exit (408 lines for codec v2). The export keeps the trained
    weights and the subprocess's stderr holds no such line."""
    ckpt = tmp_path / "ckpt"
    common = ["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--batch-size", "32",
              "--latent-dim", "4", "--out", str(tmp_path), "--log-dir", str(tmp_path / "runs"), "--no-progress",
              "--checkpoint-dir", str(ckpt)]
    assert main([*common, "--epochs", "1"]) == 0
    trained = json.loads((tmp_path / "keras_cae" / "1" / "model.json").read_text())["metrics"]["mse"]
    done = subprocess.run([sys.executable, "-m", "training", *common, "--epochs", "0"], check=False,
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AEC_TF_VERBOSE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not be found in the restored object" not in done.stderr
    exported = json.loads((tmp_path / "keras_cae" / "2" / "model.json").read_text())["metrics"]["mse"]
    assert exported == pytest.approx(trained, rel=1e-4)
