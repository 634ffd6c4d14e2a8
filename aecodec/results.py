"""What the client returns: plain dataclasses holding the service's answer, images as PIL images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class EncodedImage:
    """A bitstream from /encode and its figures; `bytes(encoded)` is the stream, `save()` writes it."""

    data: bytes
    bpp: float  # len(data) * 8 / (height * width) of the original image, header included
    model: str
    version: int
    width: int
    height: int
    channels: int
    size_policy: str | None = None
    size_action: str | None = None
    filename: str | None = None
    quality: float | None = None  # variable-rate models: the quality coded at
    search_encodes: int | None = None  # with max_bytes= / target_bpp=: the encodes the service's search ran
    effort: int = 0  # the encoder effort the service used (?effort=)

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def save(self, path: str | PathLike) -> Path:
        target = Path(path)
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True)
class Reconstruction:
    """The model's reconstruction at the original size, with the service's MSE/PSNR (inf = exact) and
    MS-SSIM (None for an image under 161 pixels on a side, or over the service's AEC_MS_SSIM_MAX_PIXELS)."""

    image: Image.Image
    psnr: float
    mse: float
    model: str
    version: int
    width: int
    height: int
    channels: int
    filename: str | None = None
    quality: float | None = None
    ms_ssim: float | None = None
    stream_bytes: int | None = None  # with max_bytes= / target_bpp=: the size of the stream it decodes from
    bpp: float | None = None  # with max_bytes= / target_bpp=: stream_bytes * 8 / (height * width)
    search_encodes: int | None = None
    effort: int = 0


@dataclass(frozen=True)
class AnomalyResult:
    score: float
    threshold: float
    is_anomaly: bool
    normalized_score: float  # threshold at 0.5, in [0, 1]
    score_kind: str
    model: str
    version: int
    width: int
    height: int
    channels: int
    heatmap: Image.Image | None = None  # per-pixel error as an overlay on the image, when asked for
    filename: str | None = None
    error_map: np.ndarray | None = None  # raw per-pixel error [height, width], when asked for


@dataclass(frozen=True)
class VersionInfo:
    version: int
    state: str  # "available" or "failed"
    architecture: str | None = None
    input: dict[str, Any] | None = None
    anomaly_threshold: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    is_default: bool
    default_version: int | None
    versions: list[VersionInfo]


def psnr_value(text: str | None, fallback: float | None = None) -> float:
    if text is None:
        return math.inf if fallback is None else fallback
    return math.inf if text == "inf" else float(text)
