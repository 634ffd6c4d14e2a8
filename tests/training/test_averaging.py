"""The weight average (`--ema-decay`): its arithmetic, its checkpoint entries, resume, and what is exported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from idx_files import write_shapes_idx

from training.cli import main


def test_the_average_follows_the_warmed_up_decay():
    import tensorflow as tf

    from training.averaging import WeightAverage

    weight = tf.Variable([0.0, 2.0])
    average = WeightAverage([weight], decay=0.5)
    expected = np.array([0.0, 2.0])
    for n, value in enumerate([[1.0, 1.0], [3.0, -1.0], [5.0, 0.0], [7.0, 4.0]]):
        weight.assign(value)
        average.update()
        decay = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18..., 0.25, 0.3...: below 0.5 for these first steps
        expected = decay * expected + (1 - decay) * np.array(value)
        np.testing.assert_allclose(average.values[0].numpy(), expected, rtol=1e-6)
    assert int(average.updates.numpy()) == 4
    average.copy_to_model()
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    weight.assign([9.0, 9.0])
    average.reset()
    assert int(average.updates.numpy()) == 0 and average.values[0].numpy().tolist() == [9.0, 9.0]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        WeightAverage([weight], decay=1.0)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_shapes_idx(tmp_path_factory.mktemp("idx"))


def _common(idx_dir, tmp_path, ckpt):
    return ["train", "--model", "keras_cae", "--dataset", f"idx:{idx_dir}", "--split", "200", "--batch-size", "32",
            "--latent-dim", "4", "--optimizer-args", '{"learning_rate": 0.003}', "--out", str(tmp_path / "store"),
            "--log-dir", str(tmp_path / "runs"), "--no-progress", "--checkpoint-dir", str(ckpt), "--skip-bitstreams"]


def test_a_run_with_an_average_checkpoints_it_resumes_it_and_exports_it(idx_dir, tmp_path, capsys):
    import tensorflow as tf

    from training.averaging import read_average

    ckpt = tmp_path / "ckpt"
    common = _common(idx_dir, tmp_path, ckpt)
    # a run without an average first: resuming it with one starts the average at its weights
    assert main([*common, "--epochs", "1"]) == 0
    steps = int(tf.train.load_checkpoint(str(ckpt)).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert main([*common, "--epochs", "2", "--ema-decay", "0.9"]) == 0
    assert "none in the checkpoint, starting at its weights" in capsys.readouterr().out
    saved = tf.train.load_checkpoint(str(ckpt))
    assert int(saved.get_tensor("ema_updates/.ATTRIBUTES/VARIABLE_VALUE")) == steps  # one per step of epoch 2
    assert main([*common, "--epochs", "3", "--ema-decay", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "none in the checkpoint" not in out and f"weight average ({2 * steps} updates" in out
    saved = tf.train.load_checkpoint(str(ckpt))
    assert int(saved.get_tensor("ema_updates/.ATTRIBUTES/VARIABLE_VALUE")) == 2 * steps

    # the export holds the average; the checkpoint the raw weights, and the two differ
    exported = tf.train.load_checkpoint(str(tmp_path / "store" / "keras_cae" / "3" / "variables" / "variables"))
    from training.models.registry import get_architecture
    from training.train import trained_variables

    model = get_architecture("keras_cae")(input_shape=(28, 28, 1), latent_dim=4)
    model(tf.zeros([1, 28, 28, 1]))
    trained = trained_variables(model)
    assert read_average(tf.train.latest_checkpoint(str(ckpt)), trained) == 2 * steps
    averaged = [v.numpy() for v in trained]
    positions = [next(i for i, m in enumerate(model.variables) if m is v) for v in trained]
    raw = [saved.get_tensor(f"variables/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in positions]
    assert any(not np.allclose(a, r, rtol=1e-4, atol=1e-6) for a, r in zip(averaged, raw))
    exported_arrays = [np.asarray(exported.get_tensor(k)) for k in exported.get_variable_to_shape_map()]
    for array in averaged:  # every averaged weight is in the SavedModel; the raw ones that differ are not
        assert any(e.shape == array.shape and np.allclose(e, array, rtol=1e-6, atol=1e-8) for e in exported_arrays)
    differing = [r for a, r in zip(averaged, raw) if not np.allclose(a, r, rtol=1e-4, atol=1e-6)]
    for array in differing:
        assert not any(e.shape == array.shape and np.allclose(e, array, rtol=1e-6, atol=1e-8) for e in exported_arrays)
    history = json.loads((tmp_path / "store" / "keras_cae" / "3" / "evaluation.json").read_text())["history"]
    assert history[-1]["steps"] == 3 * steps


def test_a_checkpoint_without_an_average_is_refused_by_the_reader(idx_dir, tmp_path):
    import tensorflow as tf

    from training.averaging import read_average

    ckpt = tmp_path / "ckpt"
    assert main([*_common(idx_dir, tmp_path, ckpt), "--epochs", "1"]) == 0
    with pytest.raises(ValueError, match="holds no weight average"):
        read_average(tf.train.latest_checkpoint(str(ckpt)), [])


@pytest.mark.parametrize("flags, message", [
    (["--ema-decay", "1.5"], "--ema-decay must lie strictly between 0 and 1"),
    (["--ema-decay", "0.99", "--strategy", "mirrored"], "--ema-decay trains on one device only"),
])
def test_bad_averages_are_refused(idx_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*_common(idx_dir, tmp_path, tmp_path / "ckpt"), "--epochs", "1", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
