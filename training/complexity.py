"""Complexity-corrected anomaly score: reconstruction error against how hard the image is to compress.

Reconstruction error alone is a weak "is it one of ours?" check: simple images (smooth skies, flat
drawings) reconstruct well whatever they show, busy ones badly even when normal. Serrà et al. (ICLR 2020,
"Input complexity and out-of-distribution detection with likelihood-based generative models") correct a
model's score by the input's complexity, the length of the image under a generic lossless compressor.
Here (`--anomaly-score complexity`):

    score = log(mse) - (intercept + slope * log(png_bpp))

with `mse` the per-image reconstruction error on [0, 1] pixels, `png_bpp` the size in bits per pixel of
the image (at the model's input size, 8-bit) as a lossless PNG, and (intercept, slope) the least-squares
line of log(mse) on log(png_bpp) over *held-out normal images only* (the calibration split): the
residual says how much worse the model reconstructs this image than a normal image of the same
complexity would be reconstructed.

Where the PNG size comes from: inside the exported `anomaly_score` signature, by TensorFlow's own PNG
encoder (`tf.io.encode_png`, the EncodePng kernel with its bundled libpng/zlib), not by the service
with Pillow. One function then computes the score at calibration (the export runs it on the validation
split) and at serving time (the service runs the SavedModel signature), the service needs no model code
and no knowledge of the score kind, and the PNG size does not depend on which zlib a Pillow wheel was
built against (Pillow 11+ wheels ship zlib-ng, whose output sizes differ from zlib's). The fitted line
is a pair of model variables (`complexity_fit`), so the SavedModel carries it; the card repeats it
(`anomaly.complexity`) for people and for checks.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: floor under the reconstruction error before the log (a perfect reconstruction is not -inf)
MSE_FLOOR = 1e-8
#: floor under the PNG size in bits per pixel before the log
BPP_FLOOR = 1e-3


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] float pixels in [0, 1] → uint8, rounded (the service's inputs are k/255: exact)."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def png_bits_per_pixel(images: tf.Tensor) -> tf.Tensor:
    """[B] size of each image as a PNG (TensorFlow's encoder, zlib level 6), in bits per pixel."""
    u8 = to_uint8(images)
    sizes = tf.map_fn(lambda img: tf.strings.length(tf.io.encode_png(img, compression=-1)), u8,
                      fn_output_signature=tf.int32)
    pixels = tf.cast(tf.shape(images)[1] * tf.shape(images)[2], tf.float32)
    return 8.0 * tf.cast(sizes, tf.float32) / pixels


def corrected_score(mse: tf.Tensor, png_bpp: tf.Tensor, fit: tf.Tensor) -> tf.Tensor:
    """log(mse) - (fit[0] + fit[1] * log(png_bpp)): the residual of the normal images' line."""
    log_error = tf.math.log(tf.maximum(mse, MSE_FLOOR))
    log_complexity = tf.math.log(tf.maximum(png_bpp, BPP_FLOOR))
    return log_error - (fit[0] + fit[1] * log_complexity)


def fit_line(mse: np.ndarray, png_bpp: np.ndarray) -> dict[str, float]:
    """Least-squares line of log(mse) on log(png_bpp) over held-out normal images.

    Returns intercept, slope, the number of images, R² and the residuals' standard deviation. Fewer
    than 3 images or a constant complexity cannot define a line: ValueError.
    """
    y = np.log(np.maximum(np.asarray(mse, np.float64), MSE_FLOOR))
    x = np.log(np.maximum(np.asarray(png_bpp, np.float64), BPP_FLOOR))
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError("one reconstruction error and one PNG size per image")
    if y.size < 3 or np.ptp(x) == 0:
        raise ValueError(f"a complexity line needs at least 3 normal images of different PNG sizes (got {y.size})")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 0.0
    return {"intercept": float(intercept), "slope": float(slope), "n": int(y.size), "r2": r2,
            "residual_std": float(residual.std())}
