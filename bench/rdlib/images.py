"""bench/rd.py's images: the files to measure, what the service sees of each (8-bit RGB), PSNR and MS-SSIM."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class BenchImage:
    path: Path
    data: bytes  # what is posted to the service: the file's bytes (or a lossless PNG of it, see `load`)
    reference: np.ndarray  # uint8 [H, W, 3]: what the service sees, as 8-bit RGB
    note: str = ""

    @property
    def height(self) -> int:
        return int(self.reference.shape[0])

    @property
    def width(self) -> int:
        return int(self.reference.shape[1])

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.reference.tobytes() + repr(self.reference.shape).encode()).hexdigest()[:32]


def list_images(paths: Sequence[str]) -> list[Path]:
    """Files of each folder (sorted, hidden files skipped), or the slice of them that `DIR[start:stop:step]`
    picks (training's own listing, `training.data.folder_listing`, so that the half of a collection a model
    never saw is named the same way in both), and files named directly."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and raw.endswith("]"):
            from training.data import folder_listing, split_pick  # a slice: training's own listing

            folder, pick = split_pick(raw)
            if folder.is_dir():
                found += folder_listing(folder, pick)
                continue
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"rd.py: {raw} is neither a folder nor a file")
    return found


def load(path: Path, max_pixels: int) -> BenchImage | str:
    """The bytes to post and the 8-bit RGB reference, or why the file is skipped."""
    from service.inference import imaging
    from service.inference.errors import ServiceError

    data = path.read_bytes()
    note = ""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            if fmt not in imaging.ACCEPTED_FORMATS:  # e.g. PPM: a client would send it as PNG
                probe.load()
                buffer = io.BytesIO()
                probe.save(buffer, format="PNG")
                data, note = buffer.getvalue(), f"{fmt} sent as lossless PNG"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return "not an image Pillow can open"
    try:
        source = imaging.read_image(data, 3, max_pixels)
    except ServiceError as exc:  # what the service would answer (too many pixels, corrupt data)
        return exc.message
    return BenchImage(path, data, imaging.to_uint8(source.pixels), note)


def psnr_u8(reference: np.ndarray, decoded: np.ndarray) -> float:
    if reference.shape != decoded.shape:
        raise ValueError(f"decoded image is {decoded.shape}, the original {reference.shape}")
    mse = float(np.mean(np.square(reference.astype(np.float64) - decoded.astype(np.float64))))
    return 10.0 * math.log10(255.0**2 / mse) if mse > 0 else math.inf


def rgb_u8(file_bytes: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(file_bytes)) as image:
        return np.asarray(image.convert("RGB"))


def ms_ssim_u8(reference: np.ndarray, decoded: np.ndarray) -> float | None:
    """MS-SSIM of two 8-bit RGB images by the service's measure (`service.inference.msssim`:
    tf.image.ssim_multiscale with its defaults, pixels /255); None under 161 px on a side."""
    from service.inference import msssim

    if reference.shape != decoded.shape:
        raise ValueError(f"decoded image is {decoded.shape}, the original {reference.shape}")
    return msssim.ms_ssim(reference, decoded)


def ms_ssim_db(value: float | None) -> float | None:
    """-10·log10(1 - MS-SSIM): MS-SSIM on a dB scale, as rate–distortion curves and BD-rates use it."""
    if value is None:
        return None
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)
