"""Where an image is odd, at a glance: a per-pixel error map as colours, alone or laid over the image.

The ramp is scaled to each image's own peak error, so the map shows *where* the error is, not how large
it is against other images (the score and the threshold say that).
"""

from __future__ import annotations

import numpy as np

from service.inference.imaging import CHUNK_ROWS, LUMA, to_float, to_uint8


def heatmap(error_map: np.ndarray) -> np.ndarray:
    """Per-pixel error [H, W] → RGB floats on a black-red-yellow-white ramp, scaled to this image's max."""
    peak = float(error_map.max())
    return _ramp(np.clip(error_map / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(error_map))


def heatmap_overlay(image: np.ndarray, error_map: np.ndarray, strength: float = 0.8) -> np.ndarray:
    """The heat map laid over the image: a dimmed grey copy of `image` [H, W, C] (any stored dtype), tinted
    by the ramp where the error is large (alpha ∝ error / this image's max), so one look shows *where* it
    is odd. uint8 RGB out, computed in row chunks: a 16 MP image never has its float copies at once."""
    peak = float(error_map.max())
    out = np.empty((*error_map.shape, 3), np.uint8)
    for row in range(0, error_map.shape[0], CHUNK_ROWS):
        rows = slice(row, row + CHUNK_ROWS)
        part = to_float(image[rows], 3 if image.shape[-1] == 3 else 1)
        grey = part[..., :1] if part.shape[-1] == 1 else (part @ LUMA)[..., None]
        base = np.repeat(0.6 * grey, 3, axis=-1)
        err = error_map[rows]
        t = np.clip(err / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(err)
        alpha = t[..., None] * strength
        out[rows] = to_uint8(np.clip(base * (1 - alpha) + _ramp(t) * alpha, 0.0, 1.0))
    return out


def _ramp(t: np.ndarray) -> np.ndarray:
    """`heatmap`'s colour ramp for errors already scaled to [0, 1] by the whole image's peak."""
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1).astype(np.float32)
