"""Training people can watch: step-level TensorBoard scalars with the learning rate, the embedding
projector over the codes, the closing summary, and disjoint splits named in the card."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from idx_files import write_shapes_idx
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import projector

from contract.card import ModelCard
from training import data
from training.cli import main
from training.projector import TENSOR_NAME, sprite_sheet


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One small keras_cae run on squares and bars: 200 images (180 train, 20 validation), 4 epochs of
    6 steps, logging every 4 steps, the learning rate divided by 10 from step 12; with what it printed."""
    root = tmp_path_factory.mktemp("watch")
    (root / "idx").mkdir()
    idx = write_shapes_idx(root / "idx")
    argv = ["train", "--model", "keras_cae", "--dataset", f"idx:{idx}", "--split", "200", "--epochs", "4",
            "--batch-size", "30", "--latent-dim", "4", "--optimizer-args", '{"learning_rate": 0.004}',
            "--lr-decay", "12", "--log-every", "4", "--out", str(root / "store"), "--name", "shapes",
            "--log-dir", str(root / "runs"), "--no-progress"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    (log_dir,) = (root / "runs").glob("shapes-*")
    return {"root": root, "idx": idx, "out": printed.getvalue(), "log_dir": log_dir,
            "version": root / "store" / "shapes" / "1"}


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) points; image tags map to an empty list."""
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [] if tag.startswith("val/input_vs") else
            [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


def test_training_terms_are_written_every_few_steps_with_the_learning_rate(trained):
    scalars = _scalars(trained["log_dir"])
    # 6 steps an epoch, a point every 4 steps and one for the rest of each epoch
    assert [s for s, _ in scalars["train/loss"]] == [4, 6, 10, 12, 16, 18, 22, 24]
    assert [s for s, _ in scalars["val/loss"]] == [6, 12, 18, 24]
    rates = dict(scalars["train/learning_rate"])
    assert rates[12] == pytest.approx(0.004) and rates[16] == pytest.approx(0.0004)  # --lr-decay 12
    assert all(np.isfinite(v) for _, v in scalars["train/loss"])
    assert "val/input_vs_reconstruction" in scalars


def test_the_projector_shows_the_validation_codes_with_their_images_and_labels(trained):
    log_dir = trained["log_dir"]
    from google.protobuf import text_format

    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), projector.ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == TENSOR_NAME and list(embedding.sprite.single_image_dim) == [28, 28]
    codes = tf.train.load_checkpoint(str(log_dir)).get_tensor(TENSOR_NAME)
    splits = data.load(f"idx:{trained['idx']}", split=200)
    assert codes.shape == (len(splits.val), 4)  # every validation image, its 4-value code
    labels = (log_dir / embedding.metadata_path).read_text().split()
    assert [int(v) for v in labels] == splits.val_labels.tolist()
    sprite = np.asarray(Image.open(log_dir / embedding.sprite.image_path))
    assert sprite.shape == (5 * 28, 5 * 28, 3)  # 20 images on a 5×5 grid
    np.testing.assert_array_equal(sprite[:28, 28:56, 0], np.rint(splits.val[1, ..., 0] * 255).astype(np.uint8))
    # squares and bars: each code is nearer its own label's mean than the other's, for most images
    means = [codes[splits.val_labels == k].mean(axis=0) for k in (0, 1)]
    nearest = np.argmin([np.linalg.norm(codes - m, axis=1) for m in means], axis=0)
    assert np.mean(nearest == splits.val_labels) > 0.7


def test_the_run_ends_with_its_folder_its_version_and_the_next_commands(trained):
    out = trained["out"]
    assert "exported shapes version 1" in out
    assert f"run folder  {trained['log_dir']}" in out and f"tensorboard --logdir {trained['log_dir'].parent}" in out
    (evaluate_line,) = [line for line in out.splitlines() if line.strip().startswith("evaluate ")]
    command = shlex.split(evaluate_line.split("evaluate", 1)[1])
    assert command[1:4] == ["-m", "training", "evaluate"]
    # the printed command measures the same test images the card's figures come from
    report = trained["root"] / "eval.json"
    assert main(command[3:] + ["--output", str(report)]) == 0
    card = ModelCard.read(trained["version"])
    assert json.loads(report.read_text())["mse"] == pytest.approx(card.metrics["mse"], rel=1e-4)
    (serve_line,) = [line for line in out.splitlines() if line.strip().startswith("serve ")]
    assert f"AEC_MODELS_DIR={trained['root'] / 'store'}" in serve_line and "AEC_DEFAULT_MODEL=shapes" in serve_line


def test_the_card_says_which_images_each_figure_comes_from(trained):
    card = ModelCard.read(trained["version"])
    splits = card.training.splits
    assert set(splits) == {"train", "validation", "calibration", "test"}
    assert splits["train"].startswith("180 images") and splits["validation"].startswith("20 images")
    assert splits["test"].startswith("40 test images")


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((80, 96, 3), i * 5, np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def test_photo_folders_hold_out_disjoint_validation_calibration_and_test(tmp_path):
    folder = _photos(tmp_path / "photos", 40)
    splits = data.load(f"folder:{folder}", val_fraction=0.1, seed=3)
    held = {key: set(names) for key, names in splits.files.items()}
    assert {k: len(v) for k, v in held.items()} == {"validation": 2, "calibration": 2, "test": 4}
    assert not held["validation"] & held["calibration"] and not (held["validation"] | held["calibration"]) & held["test"]
    assert len(splits.train) == 40 - 8 and len(splits.calibration) == 2 and len(splits.test) == 4
    values = lambda images: {round(float(img[0, 0, 0]) * 255) for img in images}
    assert not values(splits.train) & (values(splits.val) | values(splits.calibration) | values(splits.test))
    assert values(splits.test) == {int(Path(p).stem) * 5 for p in held["test"]}
    # a test dataset replaces the test split; validation and calibration stay the same images
    other = _photos(tmp_path / "other", 3)
    with_test = data.load(f"folder:{folder}", val_fraction=0.1, seed=3, test_spec=f"folder:{other}")
    assert with_test.files["validation"] == splits.files["validation"]
    assert with_test.files["calibration"] == splits.files["calibration"]
    assert len(with_test.test) == 3 and len(with_test.train) == 40 - 4
    assert with_test.sources["test"].startswith("3 images of folder:")


def test_a_folder_too_small_for_disjoint_splits_is_refused_clearly(tmp_path):
    folder = _photos(tmp_path / "few", 4)
    with pytest.raises(ValueError, match="too few for disjoint train, validation, calibration and test.*--test-dataset"):
        data.load(f"folder:{folder}")
    other = _photos(tmp_path / "other", 2)
    assert len(data.load(f"folder:{folder}", test_spec=f"folder:{other}").train) == 2


def test_a_sprite_sheet_lays_images_out_row_by_row_on_a_square_grid():
    images = np.stack([np.full((2, 3, 1), v / 255.0, np.float32) for v in (10, 20, 30)])
    sheet = sprite_sheet(images)
    assert sheet.shape == (4, 6, 3) and sheet.dtype == np.uint8
    assert sheet[0, 0].tolist() == [10] * 3 and sheet[0, 3].tolist() == [20] * 3 and sheet[2, 0].tolist() == [30] * 3
    assert sheet[2, 3].tolist() == [0, 0, 0]  # the empty cell


def test_tensorboard_serves_the_projector_of_the_run(trained):
    """TensorBoard itself (on loopback) finds the run's projector and serves its codes and sprite."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logdir = trained["log_dir"].parent
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline, runs = time.monotonic() + 60, []
        while time.monotonic() < deadline and not runs:
            try:
                runs = httpx.get(f"{base}/runs", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.5)
        run = trained["log_dir"].name
        assert runs == [run]
        info = httpx.get(f"{base}/info", params={"run": run}, timeout=10).json()
        (embedding,) = info["embeddings"]
        assert embedding["tensorShape"] == [20, 4] and embedding["metadataPath"].endswith("metadata.tsv")
        codes = httpx.get(f"{base}/tensor", params={"run": run, "name": TENSOR_NAME}, timeout=10).content
        expected = tf.train.load_checkpoint(str(trained["log_dir"])).get_tensor(TENSOR_NAME)
        np.testing.assert_array_equal(np.frombuffer(codes, np.float32).reshape(20, 4), expected)
        sprite = httpx.get(f"{base}/sprite_image", params={"run": run, "name": TENSOR_NAME}, timeout=10)
        assert sprite.status_code == 200 and sprite.content.startswith(b"\x89PNG")
    finally:
        server.terminate()
        server.wait(timeout=20)
