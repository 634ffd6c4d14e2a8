"""MS-SSIM of a reconstruction (Wang, Simoncelli & Bovik 2003): `tf.image.ssim_multiscale`'s measure with
its defaults (5 scales with the standard weights, an 11×11 Gaussian window of σ 1.5, k1 0.01, k2 0.03,
pixels in [0, 1], averaged over the channels), computed with the window applied as two 1-D passes.

Why not the library call itself: it filters with the 11×11 window as one depthwise convolution, four
times per scale, which TensorFlow runs slowly on a CPU; the Gaussian window is the outer product of
its 1-D profile (a softmax of a sum of squares factorises), so a row pass and a column pass over the
the four filtered quantities (two at a time) give the same numbers for a fraction of the time.
`tf.image.ssim_multiscale` stays the reference: tests/service/app/test_ms_ssim.py holds the two within
1e-6 on synthetic images (odd sides, grey, the minimum size) and 1e-5 on a real photo (float32 sums in
another order); `bench/msssim.py` times them side by side (figures in docs/operators.md). Training
(`training/evaluate.py`) calls the library directly.

Only measurable where every scale still holds one window: each side ≥ MIN_SIDE (161 px: 161 → 81 → 41 → 21
→ 11 through the four 2× downsamplings). Smaller images (MNIST's 28×28, a thumbnail) get None: a JSON null
and no `X-MS-SSIM` header, never an error. The service measures images up to AEC_MS_SSIM_MAX_PIXELS only
(default 2^21 = 2,097,152 pixels: a 1920×1080 frame; 0 turns it off) and runs it on the model executor,
off the event loop, like every other TensorFlow call of a request.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from service.inference import imaging

#: The smallest side tf.image.ssim_multiscale accepts with its defaults (5 scales, 11-px window).
MIN_SIDE = 161
#: Largest image (width × height at the model's size) measured by default.
DEFAULT_MAX_PIXELS = 2**21


def measurable(height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    return min(height, width) >= MIN_SIDE and height * width <= max_pixels


def ms_ssim(reference: np.ndarray, output: np.ndarray) -> float | None:
    """MS-SSIM of two images [H, W, C] (floats in [0, 1], or uint8/uint16 read as such; `reference` in the
    output's channels, as `imaging.to_float` makes them); None when they are smaller than MIN_SIDE on a
    side or the value is not finite. Synchronous: TensorFlow on this thread."""
    import tensorflow as tf

    if reference.shape[:2] != output.shape[:2]:
        raise ValueError(f"MS-SSIM of images shaped {reference.shape} and {output.shape}")
    if min(reference.shape[0], reference.shape[1]) < MIN_SIDE:
        return None
    channels = output.shape[-1]
    a, b = (np.clip(imaging.to_float(x, channels), 0.0, 1.0) for x in (reference, output))
    value = float(_ms_ssim(tf.constant(a)[None], tf.constant(b)[None]).numpy())
    return value if math.isfinite(value) else None


#: tf.image.ssim_multiscale's defaults.
POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FILTER_SIZE, FILTER_SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def gaussian_profile(size: int, sigma: float) -> np.ndarray:
    """The 1-D factor of tf.image's `_fspecial_gauss(size, sigma)` window (which is its outer product)."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    weights = np.exp(-0.5 * coords**2 / sigma**2)
    return (weights / weights.sum()).astype(np.float32)


def _scale(x, y):
    """(SSIM, contrast-structure) per channel at one scale, [1, C] each, as tf.image's `_ssim_per_channel`
    with max_val 1: luminance · cs and cs averaged over the valid positions of the window."""
    import tensorflow as tf

    size = min(FILTER_SIZE, int(x.shape[1]), int(x.shape[2]))
    profile = tf.constant(gaussian_profile(size, FILTER_SIGMA))
    channels = 2 * int(x.shape[-1])
    rows = tf.tile(tf.reshape(profile, [1, size, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(profile, [size, 1, 1, 1]), [1, 1, channels, 1])

    def window(v):
        return tf.nn.depthwise_conv2d(tf.nn.depthwise_conv2d(v, rows, [1, 1, 1, 1], "VALID"), cols,
                                      [1, 1, 1, 1], "VALID")

    # two quantities per pass: all four at once is faster still but holds twice the library's memory
    mean_x, mean_y = tf.split(window(tf.concat([x, y], axis=-1)), 2, axis=-1)
    mean_xy, mean_squares = tf.split(window(tf.concat([x * y, x * x + y * y], axis=-1)), 2, axis=-1)
    c1, c2 = K1**2, K2**2
    num0 = mean_x * mean_y * 2.0
    den0 = tf.square(mean_x) + tf.square(mean_y)
    luminance = (num0 + c1) / (den0 + c1)
    cs = (mean_xy * 2.0 - num0 + c2) / (mean_squares - den0 + c2)
    return tf.reduce_mean(luminance * cs, [1, 2]), tf.reduce_mean(cs, [1, 2])


def _ms_ssim(x, y):
    """MS-SSIM of two [1, H, W, C] float32 images in [0, 1]: tf.image.ssim_multiscale's composition
    (relu'd cs of the first four scales, relu'd SSIM of the last, weighted product, channel mean),
    downsampling by 2×2 averages after padding odd sides symmetrically, as it does."""
    import tensorflow as tf

    factors = []
    for k in range(len(POWER_FACTORS)):
        if k > 0:
            pad = [[0, 0], [0, int(x.shape[1]) % 2], [0, int(x.shape[2]) % 2], [0, 0]]
            x, y = (tf.nn.avg_pool2d(tf.pad(v, pad, "SYMMETRIC"), 2, 2, "VALID") for v in (x, y))
        ssim, cs = _scale(x, y)
        factors.append(tf.nn.relu(cs))
    factors[-1] = tf.nn.relu(ssim)
    weighted = tf.reduce_prod(tf.stack(factors, axis=-1) ** tf.constant(POWER_FACTORS), axis=-1)
    return tf.reduce_mean(weighted)


def db(value: float | None) -> float | None:
    """MS-SSIM in dB, -10·log10(1 - MS-SSIM) (how rate–distortion curves plot it); inf for 1."""
    if value is None:
        return None
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


async def measure(executor: object, reference: np.ndarray, output: np.ndarray,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> float | None:
    """`ms_ssim` on `executor` (a model's inference executor; None: the loop's default), or None without
    any work for an image outside `measurable`."""
    if not measurable(reference.shape[0], reference.shape[1], max_pixels):
        return None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, ms_ssim, reference, output)  # type: ignore[arg-type]
