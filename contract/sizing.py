"""How an image of any size meets a model's input: the padding plan both sides use.

Training measures its figures on images padded exactly as the service pads uploads (edge replication up
to the size multiple, cropped back after decoding), so the two must share one plan. Numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from contract.card import InputSpec

SizeAction = Literal["none", "padded", "resized"]


class SizeRejected(ValueError):
    """The image size does not fit a fixed-size model whose policy is to reject (or pad a larger one)."""


@dataclass(frozen=True)
class SizePlan:
    """How an image of `height`×`width` maps onto the model input (and back)."""

    height: int
    width: int
    model_height: int
    model_width: int
    policy: str
    action: SizeAction


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest size at least `height`×`width` whose sides are multiples of `multiple`."""
    return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple


def plan_size(height: int, width: int, spec: InputSpec) -> SizePlan:
    """Decide pad / resize / reject for one image size; the same plan crops or resizes back."""
    if spec.any_size:
        mh, mw = padded_size(height, width, spec.size_multiple)
        action: SizeAction = "none" if (mh, mw) == (height, width) else "padded"
        return SizePlan(height, width, mh, mw, "pad", action)
    mh, mw = int(spec.height), int(spec.width)  # type: ignore[arg-type]
    if (height, width) == (mh, mw):
        return SizePlan(height, width, mh, mw, spec.size_policy, "none")
    if spec.size_policy == "resize":
        return SizePlan(height, width, mh, mw, "resize", "resized")
    if spec.size_policy == "pad" and height <= mh and width <= mw:
        return SizePlan(height, width, mh, mw, "pad", "padded")
    raise SizeRejected(
        f"the model takes {mw}x{mh} images and its size policy is {spec.size_policy!r}; got {width}x{height}"
    )


def pad_edges(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-replicate the two spatial axes of [H, W, C] (or a batch [B, H, W, C]) up to `height`×`width`."""
    axis = pixels.ndim - 3
    ph, pw = height - pixels.shape[axis], width - pixels.shape[axis + 1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {pixels.shape[axis:axis + 2]} down to {(height, width)}")
    if not ph and not pw:
        return pixels
    pad = [(0, 0)] * axis + [(0, ph), (0, pw), (0, 0)]
    return np.pad(pixels, pad, mode="edge")


def pad_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    """A batch [B, H, W, C] edge-replicated up to the size multiple (an any-size model's input)."""
    return pad_edges(images, *padded_size(images.shape[1], images.shape[2], multiple))


def valid_region(pixels: np.ndarray, plan: SizePlan) -> np.ndarray:
    """The part of a model-sized array [h, w, ...] that holds image, not padding."""
    return pixels[: plan.height, : plan.width] if plan.action == "padded" else pixels
