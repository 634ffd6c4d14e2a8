"""`training.evaluate` reports MS-SSIM next to PSNR for images big enough (>= 161 px a side), as
tf.image.ssim_multiscale gives it, and leaves it out (no NaN, no error) for smaller ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from contract.sizing import pad_to_multiple
from training.evaluate import MS_SSIM_MIN_SIDE, coder_from_saved_model, evaluate


def _fields(n: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(n, 6, 6, 3)).astype(np.float32)
    return np.clip(tf.image.resize(coarse, (height, width), method="bicubic").numpy(), 0, 1).astype(np.float32)


def test_ms_ssim_of_big_images_only(variable_rate_store) -> None:
    coder = coder_from_saved_model(variable_rate_store / "codec-vr" / "1", 2.0)
    big = _fields(2, MS_SSIM_MIN_SIDE, 176, seed=0)
    metrics = evaluate(coder, big, with_bpp=False).metrics
    recon = coder.decode(coder.encode(pad_to_multiple(big, coder.size_multiple)))[:, :MS_SSIM_MIN_SIDE, :176]
    expected = float(np.mean(tf.image.ssim_multiscale(big, np.clip(recon, 0, 1), max_val=1.0).numpy()))
    assert metrics["ms_ssim"] == pytest.approx(expected, abs=1e-6) and 0 < metrics["ms_ssim"] < 1
    assert metrics["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - expected), abs=1e-4)
    assert metrics["ms_ssim_images"] == 2
    small = evaluate(coder, _fields(2, 64, 64, seed=1), with_bpp=False).metrics
    assert "psnr" in small and not any(key.startswith("ms_ssim") for key in small)
