"""Tiled transforms for big images: memory bounded by the tile, one bitstream, no seams.

A fully convolutional codec's output at a pixel depends only on inputs within its receptive field.
So a big image is cut into tiles whose *cores* partition it; each tile is read with a `halo` of
context on every side, run through the signature, and only its core is kept. With a halo at least
the receptive field, every kept value is what the whole image would have given (up to float
rounding): the latents are assembled into ONE latent grid, entropy-coded as one stream (the same
format, decodable tiled or not), and the decoded tiles meet without seams. Nothing is blended,
nothing is coded twice, and the bitstream does not depend on the tile size.

Receptive fields of the `codec` architecture (GDN transforms with four 5×5 stride-2 layers and the
hyperprior): analysis ≈ 30 px for y and ≈ 140 px for z; synthesis incl. the mean from ẑ ≈ 170 px.
A model's card names the halo it needs (`input.tile_halo`); 192 px (three z cells) covers
both for cards that name none. Core and halo are multiples of the model's
`size_multiple`, so tiles cut every latent grid at whole cells.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from contract.card import LatentSpec
from service.inference import imaging

Call = Callable[[str, dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


#: The halo of a model whose card names none (cards written before `input.tile_halo`: the `codec`s).
DEFAULT_HALO = 192


@dataclass(frozen=True)
class Tiling:
    """Tile cores of `tile` px read with `halo` px of context; images up to `tile + 2*halo` on both
    sides (after padding) run whole. `halo=None`: the model's (`for_model`)."""

    tile: int = 1024
    halo: int | None = None

    def for_model(self, card_halo: int | None) -> Tiling:
        """The halo a model needs is a property of its receptive field, so its card's wins unless the
        operator set one explicitly (trading seams for speed is their call)."""
        if self.halo is not None:
            return self
        return Tiling(self.tile, DEFAULT_HALO if card_halo is None else card_halo)

    def applies(self, height: int, width: int) -> bool:
        limit = self.tile + 2 * (DEFAULT_HALO if self.halo is None else self.halo)
        return height > limit or width > limit


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in pixels: read [read0, read1), keep [keep0, keep1) of the image."""

    read0: int
    read1: int
    keep0: int
    keep1: int


def spans(length: int, tiling: Tiling, multiple: int) -> list[Span]:
    """Cores partition [0, length); reads add the halo, clipped to the image. All multiples of `multiple`."""
    if length % multiple:
        raise ValueError(f"length {length} is not a multiple of {multiple}")
    tile = max(multiple, tiling.tile // multiple * multiple)
    if tiling.halo is None:
        raise ValueError("resolve the model's halo first (Tiling.for_model)")
    halo = math.ceil(tiling.halo / multiple) * multiple
    out = []
    for keep0 in range(0, length, tile):
        keep1 = min(length, keep0 + tile)
        out.append(Span(max(0, keep0 - halo), min(length, keep1 + halo), keep0, keep1))
    return out


def _latent_slice(span: Span, stride: int, which: str) -> slice:
    a, b = (span.read0, span.read1) if which == "read" else (span.keep0, span.keep1)
    return slice(a // stride, math.ceil(b / stride))


async def encode(call: Call, images: np.ndarray, latents: list[LatentSpec], tiling: Tiling,
                 multiple: int, extra: dict[str, np.ndarray] | None = None,
                 channels: int | None = None, signature: str = "encode") -> dict[str, np.ndarray]:
    """`encode` (or `signature`, another of the same outputs) over tiles of `images` [H, W, C] (already padded to `multiple`) → whole latent grids.
    `extra`: per-image inputs every tile takes as they are (a variable-rate model's quality).
    `channels`: the model's; `images` may then be stored narrower (uint8, the upload's own channels),
    and only each tile becomes float32 (`imaging.to_float`): a big image never has a float copy."""
    height, width = images.shape[:2]
    rows, cols = spans(height, tiling, multiple), spans(width, tiling, multiple)
    out: dict[str, np.ndarray] = {}
    for row in rows:
        for col in cols:  # one tile at a time: that is the memory bound
            tile = images[row.read0 : row.read1, col.read0 : col.read1]
            if channels is not None and (tile.dtype != np.float32 or tile.shape[-1] != channels):
                tile = await asyncio.to_thread(imaging.to_float, tile, channels)  # tile-sized, off the loop
            tile = np.ascontiguousarray(tile)
            result = await call(signature, {"images": tile, **(extra or {})})
            for spec in latents:
                value, s = np.asarray(result[spec.name]), int(spec.stride or 0)
                if not s:
                    raise ValueError(f"latent {spec.name!r} has no stride: the model cannot be tiled")
                sx = int(spec.stride_x or s)
                if spec.name not in out:
                    out[spec.name] = np.zeros((math.ceil(height / s), math.ceil(width / sx), value.shape[-1]),
                                              value.dtype)
                rk, ck = _latent_slice(row, s, "keep"), _latent_slice(col, sx, "keep")
                r0, c0 = row.read0 // s, col.read0 // sx
                out[spec.name][rk, ck] = value[rk.start - r0 : rk.stop - r0, ck.start - c0 : ck.stop - c0]
    return out


async def decode(call: Call, latents: dict[str, np.ndarray], specs: list[LatentSpec], height: int, width: int,
                 tiling: Tiling, multiple: int, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """`decode` over tiles of whole latent grids → the image [height, width, C] (padded size)."""
    rows, cols = spans(height, tiling, multiple), spans(width, tiling, multiple)
    image: np.ndarray | None = None
    for row in rows:
        for col in cols:
            inputs = dict(extra or {})
            for spec in specs:
                s = int(spec.stride or 0)
                inputs[spec.name] = np.ascontiguousarray(
                    latents[spec.name][_latent_slice(row, s, "read"), _latent_slice(col, int(spec.stride_x or s), "read")])
            pixels = np.asarray((await call("decode", inputs))["images"])
            if image is None:
                image = np.zeros((height, width, pixels.shape[-1]), np.float32)
            image[row.keep0 : row.keep1, col.keep0 : col.keep1] = pixels[
                row.keep0 - row.read0 : row.keep1 - row.read0, col.keep0 - col.read0 : col.keep1 - col.read0]
    assert image is not None
    return image
