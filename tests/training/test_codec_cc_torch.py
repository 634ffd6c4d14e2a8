"""The PyTorch twin of codec v2's training graph computes what the Keras model computes, on the same
weights and the same noise: the loss, its terms and every weight's gradient (training/gpu/).

Needs PyTorch (`pip install torch`; CI installs the CPU build): without it the module is skipped.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")

from training.gpu.codec_cc_torch import ChannelCodecTorch, Conv, Deconv
from training.models.codec_cc import ChannelCodec
from training.train import trained_variables

TINY = {"num_filters": 16, "latent_channels": 24, "hyper_channels": 16, "support_channels": 24, "slices": [4, 8, 12],
        "param_hidden": [16, 16], "lrp_hidden": 16, "lmbdas": [0.002, 0.02, 0.2], "level_weight_exponent": 0.5}


SHAPES = pytest.mark.parametrize("shape", [{}, {"level_synthesis": True},
                                           {"level_synthesis": True, "synthesis_residual": [1, 2, 0]}],
                                  ids=["plain", "level_synthesis", "synthesis_residual"])


def _keras_model(seed: int = 0, shape: dict | None = None) -> ChannelCodec:
    """A tiny codec whose every weight is moved off its initial value (the residual predictors' last
    layers start at zero, GDN at its identity-like start), so that no term is trivially equal."""
    keras.utils.set_random_seed(seed)
    model = ChannelCodec(**TINY, **(shape or {}))
    model(tf.zeros([1, 64, 64, 3]))
    rng = np.random.default_rng(seed)
    for weight in model.named_weights().values():
        value = weight.numpy()
        weight.assign(value + 0.05 * rng.normal(size=value.shape).astype(np.float32) * (np.abs(value).mean() + 0.1))
    return model


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.transpose(x, (0, 3, 1, 2)).copy())


def test_same_padding_convolutions_match_keras_at_every_stride_and_odd_sizes() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 13, 10, 5)).astype(np.float32)
    for kernel, stride in [(5, 2), (3, 1), (1, 1), (5, 1)]:
        layer = keras.layers.Conv2D(7, kernel, strides=stride, padding="same")
        expected = layer(x).numpy()
        twin = Conv(5, 7, kernel, stride)
        twin.kernel.data, twin.bias.data = torch.as_tensor(layer.kernel.numpy()), torch.as_tensor(layer.bias.numpy())
        got = twin(_nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=f"conv {kernel}/{stride}")
        layer = keras.layers.Conv2DTranspose(7, kernel, strides=stride, padding="same")
        expected = layer(x).numpy()
        twin = Deconv(5, 7, kernel, stride)
        twin.kernel.data, twin.bias.data = torch.as_tensor(layer.kernel.numpy()), torch.as_tensor(layer.bias.numpy())
        got = twin(_nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=f"deconv {kernel}/{stride}")


@SHAPES
def test_named_weights_are_every_trained_variable(shape: dict) -> None:
    model = _keras_model(shape=shape)
    named = {id(v) for v in model.named_weights().values()}
    assert {id(v) for v in trained_variables(model)} <= named
    twin = ChannelCodecTorch(**TINY, **shape)
    assert {n: tuple(p.shape) for n, p in twin.named_weights()} == {
        n: tuple(v.shape) for n, v in model.named_weights().items()}


@SHAPES
def test_the_twin_gives_the_keras_loss_and_gradients_on_the_same_weights_and_noise(monkeypatch, shape: dict) -> None:
    model = _keras_model(shape=shape)
    arrays = {name: v.numpy() for name, v in model.named_weights().items()}
    twin = ChannelCodecTorch(**TINY, **shape)
    twin.load_weights(arrays)
    images = np.random.default_rng(2).uniform(size=(3, 64, 128, 3)).astype(np.float32)

    # The Keras model's random draws, replayed: the level per image, z's noise, then each slice's.
    rng = np.random.default_rng(3)
    levels = np.array([0, 2, 1], np.int32)
    z_noise = rng.uniform(-0.5, 0.5, size=(3, 1, 2, 16)).astype(np.float32)
    y_noise = [rng.uniform(-0.5, 0.5, size=(3, 4, 8, w)).astype(np.float32) for w in TINY["slices"]]
    draws = [levels, z_noise, *y_noise]
    queue = list(draws)

    def replay(shape, minval=0, maxval=None, dtype=tf.float32, seed=None, name=None):
        value = queue.pop(0)
        assert tuple(value.shape) == tuple(int(s) for s in shape)
        return tf.constant(value, dtype)

    monkeypatch.setattr(tf.random, "uniform", replay)
    variables = list(model.named_weights().values())
    with tf.GradientTape() as tape:
        expected = model.compute_losses(tf.constant(images), training=True)
    keras_grads = dict(zip(model.named_weights(), tape.gradient(expected["loss"], variables)))
    assert not queue

    got = twin.losses(_nchw(images), noise=[torch.as_tensor(levels), _nchw(z_noise), *map(_nchw, y_noise)])
    got["loss"].backward()
    for key in ("loss", "mse", "bpp_y", "bpp_z", "psnr"):
        np.testing.assert_allclose(float(got[key].detach()), float(expected[key]), rtol=2e-4, err_msg=key)
    torch_grads = {name: p.grad for name, p in twin.named_weights()}
    assert keras_grads.keys() == torch_grads.keys()
    for name, grad in keras_grads.items():
        if grad is None:  # gains of no image's level
            assert torch_grads[name] is None or not torch_grads[name].abs().max() > 0
            continue
        grad = tf.convert_to_tensor(grad).numpy()  # the gains' gradients come as IndexedSlices
        scale = float(np.abs(grad).max()) + 1e-12
        np.testing.assert_allclose(torch_grads[name].numpy() / scale, grad / scale, atol=2e-3, err_msg=name)


def test_weights_go_back_unchanged_and_bad_snapshots_are_refused() -> None:
    arrays = {name: v.numpy() for name, v in _keras_model().named_weights().items()}
    twin = ChannelCodecTorch(**TINY)
    twin.load_weights(arrays)
    back = twin.weight_arrays()
    assert all(np.array_equal(back[name], arrays[name]) for name in arrays)
    with pytest.raises(KeyError, match="g_a.0.kernel"):
        twin.load_weights({k: v for k, v in arrays.items() if k != "g_a.0.kernel"})
    with pytest.raises(ValueError, match="log_gain"):
        twin.load_weights({**arrays, "log_gain": arrays["log_gain"][:2]})


def test_a_gpu_run_trains_from_a_snapshot_without_tensorflow_and_comes_back_as_a_checkpoint(tmp_path: Path) -> None:
    """training.gpu.pack → training.gpu.train (in a process where TensorFlow cannot be imported) →
    training.snapshot.restore: the run's weights and step arrive in a checkpoint the CPU run resumes."""
    import subprocess
    import sys

    from PIL import Image

    from training import snapshot
    from training.gpu import snapshot_files
    from training.gpu.pack import pack
    from training.train import resumed_step

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (100, 90, 3), np.uint8)).save(photos / f"{i}.png")
    index = pack(f"folder:{photos}", tmp_path / "pack", crop=80, max_mib=0.2, min_side=64)
    assert len(index["crops"]) > 5 and index["bytes"] <= 0.2 * 2**20
    twin = ChannelCodecTorch(**TINY)
    start = twin.weight_arrays()
    snapshot_files.write(tmp_path / "snap", start, {"architecture": "codec_cc", "model_args": TINY, "step": 800,
                                                    "epoch": 2})
    script = ("import sys; sys.modules['tensorflow'] = None; from training.gpu.train import main; "
              f"main(['--snapshot', '{tmp_path / 'snap'}', '--pack', '{tmp_path / 'pack'}', '--out', "
              f"'{tmp_path / 'back'}', '--minutes', '5', '--max-steps', '4', '--batch', '4', '--crop', '64', "
              "'--log-every', '2', '--lr', '1e-3'])")
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "4 steps of batch 4" in run.stdout
    arrays, meta = snapshot_files.read(tmp_path / "back")
    assert (meta["step"], meta["epoch"]) == (802, 2)  # 4 steps of 4 crops = 2 steps of the CPU run's 8
    assert len(meta["history"]) == 2 and all(np.isfinite(row["loss"]) for row in meta["history"])
    assert not np.array_equal(arrays["g_a.0.kernel"], start["g_a.0.kernel"])  # it trained

    snapshot.restore(tmp_path / "back", tmp_path / "ckpt")
    assert resumed_step(tmp_path / "ckpt") == 802
    model = ChannelCodec(**TINY)
    model(tf.zeros([1, 64, 64, 3]))
    tf.train.Checkpoint(variables=list(model.variables)).read(
        tf.train.latest_checkpoint(str(tmp_path / "ckpt"))).expect_partial()
    for name, weight in model.named_weights().items():
        np.testing.assert_array_equal(weight.numpy(), arrays[name], err_msg=name)
