"""bench/load.py's test images and checks: synthetic images of the sizes a model's policy accepts, the
reference answer of each, and the comparison of every answer under load with its image's reference."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

from contract.bitstream import Bitstream, BitstreamError

PIXEL_TOLERANCE = 1  # uint8 levels: a reconstruction is the same image, give or take float rounding
SCORE_RTOL = 1e-5


@dataclass(frozen=True)
class TestImage:
    index: int
    png: bytes
    width: int
    height: int
    channels: int


def _pattern(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """Smooth blobs on black, distinct per seed: varied enough that no two images are alike."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros((height, width, channels), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        sigma = rng.uniform(0.08, 0.16) * min(height, width)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        out = np.maximum(out, blob[..., None] * rng.uniform(0.5, 1.0, size=channels).astype(np.float32))
    return np.clip(out, 0.0, 1.0)


def sizes_for(spec: dict) -> list[tuple[int, int]]:
    """Sizes the model's policy accepts: any size (pad), resize from anything, or its own size only."""
    if spec.get("any_size"):
        return [(32, 32), (48, 64), (64, 40), (96, 96), (33, 57), (128, 80)]
    h, w = int(spec["height"]), int(spec["width"])
    if spec.get("size_policy") == "resize":
        return [(h, w), (h, w), (h + 5, w + 3), (2 * h, 2 * w), (max(8, h // 2), w), (h, 3 * w // 2)]
    if spec.get("size_policy") == "pad":
        return [(h, w), (h, w), (max(4, h - 3), max(4, w - 5)), (max(4, h // 2), max(4, w // 2))]
    return [(h, w)]


def make_images(spec: dict, count: int, seed: int) -> list[TestImage]:
    rng = np.random.default_rng(seed)
    sizes = sizes_for(spec)
    images = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        channels = int(spec.get("channels", 1)) if i % 3 else (3 if spec.get("channels", 1) == 1 else 1)
        pixels = np.rint(_pattern(rng, height, width, channels) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
        images.append(TestImage(i, buffer.getvalue(), width, height, channels))
    return images


def png_pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


# ---- references and checks ----------------------------------------------------------------------
@dataclass
class Reference:
    stream: bytes
    recon: np.ndarray  # uint8 levels (as int16) of /reconstruct
    score: float | None  # None when the model has no calibrated threshold
    decode_vs_recon: int  # max level difference of decode(encode(x)) vs reconstruct(x)


class Checker:
    """Compares an answer with the reference of the image it was asked about; returns why not, or None."""

    def __init__(self, images: Sequence[TestImage], references: Sequence[Reference]) -> None:
        self.images, self.references = images, references
        self.max_score_deviation = 0.0
        self.max_level_deviation = 0

    def encode(self, i: int, response: httpx.Response) -> str | None:
        image, ref = self.images[i], self.references[i]
        try:
            header = Bitstream.from_bytes(response.content)
        except BitstreamError as exc:
            return f"encode[{i}]: not a bitstream ({exc})"
        if (header.width, header.height, header.channels) != (image.width, image.height, image.channels):
            return f"encode[{i}]: stream is for a {header.width}x{header.height}x{header.channels} image"
        if response.content != ref.stream:
            return f"encode[{i}]: stream differs from the reference ({len(response.content)} vs {len(ref.stream)} B)"
        return None

    def image(self, what: str, i: int, response: httpx.Response) -> str | None:
        image, ref = self.images[i], self.references[i]
        try:
            pixels = png_pixels(response.content)
        except OSError as exc:
            return f"{what}[{i}]: not an image ({exc})"
        if pixels.shape != ref.recon.shape:
            return f"{what}[{i}]: shape {pixels.shape}, expected {ref.recon.shape} ({image.width}x{image.height})"
        deviation = int(np.abs(pixels - ref.recon).max())
        self.max_level_deviation = max(self.max_level_deviation, deviation)
        if deviation > PIXEL_TOLERANCE:
            return f"{what}[{i}]: differs from image {i}'s reconstruction by up to {deviation} levels"
        return None

    def score(self, i: int, response: httpx.Response) -> str | None:
        ref = self.references[i]
        body = response.json()
        if (body.get("width"), body.get("height")) != (self.images[i].width, self.images[i].height):
            return f"anomaly-score[{i}]: answer is about a {body.get('width')}x{body.get('height')} image"
        assert ref.score is not None
        deviation = abs(body["score"] - ref.score) / max(abs(ref.score), 1e-12)
        self.max_score_deviation = max(self.max_score_deviation, deviation)
        if deviation > SCORE_RTOL:
            return f"anomaly-score[{i}]: {body['score']!r} vs reference {ref.score!r}"
        return None
