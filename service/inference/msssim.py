"""MS-SSIM of a reconstruction (Wang, Simoncelli & Bovik 2003), through `tf.image.ssim_multiscale` with its
defaults: 5 scales with the standard weights, an 11×11 Gaussian window (σ 1.5), k1 0.01, k2 0.03, pixels
in [0, 1] (max_val 1), averaged over the channels.

Only measurable where every scale still holds one window: each side ≥ MIN_SIDE (161 px: 161 → 81 → 41 → 21
→ 11 through the four 2× downsamplings). Smaller images (MNIST's 28×28, a thumbnail) get None: a JSON null
and no `X-MS-SSIM` header, never an error. The measure is ~2.5× the compute of `natural`'s reconstruction
itself on a CPU (4.2-4.7 CPU-seconds per megapixel, against 1.7-2.1 for the reconstruction, and
about 200 MiB of working memory per megapixel, measured on this project's 2-core machine; docs/operators.md),
so the service measures images up to AEC_MS_SSIM_MAX_PIXELS only (default 2^21 = 2,097,152 pixels: a
1920×1080 frame; 0 turns it off) and runs it on the model executor, off the event loop, like every other
TensorFlow call of a request.
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
    value = float(tf.image.ssim_multiscale(a, b, max_val=1.0).numpy())
    return value if math.isfinite(value) else None


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
