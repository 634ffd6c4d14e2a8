"""Whether a bitstream may be decoded: against the model it names (`check`: tables, plausible sizes,
latent shapes and payload lengths, so a crafted stream cannot buy a huge allocation), and against what
the decode request asked for (`check_requested`).

A stream names its model, version and (variable-rate models) quality; a request may name them too
(`?model=`, `?version=`, `?quality=`), and then they must agree, or the answer is a 422 rather than an
image from another model. This runs on the header alone, before the stream is checked against the
model it names (`check`) and before any decoding work.
"""

from __future__ import annotations

import math

import numpy as np

from contract.bitstream import Bitstream, BitstreamError
from contract.card import LatentSpec, quality_hundredths
from service.inference import imaging
from service.inference.errors import (
    BitstreamModelMismatch,
    CorruptBitstream,
    ImageSizeRejected,
    TooManyPixels,
)
from service.inference.loaded import LoadedModel


def check_requested(stream: Bitstream, model: str | None = None, version: int | None = None,
                    quality: float | None = None) -> None:
    """Refuse `stream` when it was made by another model or version than the request names, or coded at
    another quality (compared as the stream records it: in hundredths)."""
    if model is not None and model != stream.model:
        raise BitstreamModelMismatch(f"the bitstream was made by model {stream.model!r}, not {model!r}")
    if version is not None and version != stream.version:
        raise BitstreamModelMismatch(f"the bitstream was made by version {stream.version}, not {version}")
    if quality is not None and quality_hundredths(quality) != stream.quality_hundredths:
        coded = "a single rate" if stream.quality is None else f"quality {stream.quality:g}"
        raise BitstreamModelMismatch(f"the bitstream was coded at {coded}, not quality {quality:g}")


def parse(data: bytes) -> Bitstream:
    try:
        return Bitstream.from_bytes(data)
    except BitstreamError as exc:
        raise CorruptBitstream(f"invalid bitstream: {exc}") from exc


def check(model: LoadedModel, stream: Bitstream, max_pixels: int) -> imaging.SizePlan:
    """Refuse a stream this model did not make, or one whose sizes are implausible, before decoding."""
    if stream.tables_hash != model.tables_hash:
        raise BitstreamModelMismatch(
            f"the bitstream names {stream.model} version {stream.version} but was made with different weights or "
            f"entropy tables (tables hash {stream.tables_hash.hex()} != {model.tables_hash.hex()})"
        )
    rate = model.card.rate
    if (rate is None) != (stream.quality is None):
        raise CorruptBitstream(f"the bitstream {'lacks' if rate else 'carries'} a quality field, but model "
                               f"{model.name} is {'variable' if rate else 'single'}-rate")
    if rate is not None and not rate.min_quality <= stream.quality <= rate.max_quality:  # type: ignore[operator]
        raise CorruptBitstream(f"bitstream quality {stream.quality:g} is outside [{rate.min_quality:g}, "
                               f"{rate.max_quality:g}]")
    if stream.channels not in (1, 3):
        raise CorruptBitstream(f"bitstream header claims {stream.channels} channels")
    if stream.height < 1 or stream.width < 1:
        raise CorruptBitstream(f"bitstream header claims an empty image {stream.width}x{stream.height}")
    if stream.height * stream.width > max_pixels:
        raise TooManyPixels(f"bitstream decodes to {stream.width}x{stream.height} pixels; the limit is {max_pixels}")
    try:
        plan = imaging.plan_size(stream.height, stream.width, model.card.input)
    except ImageSizeRejected as exc:
        raise CorruptBitstream(f"bitstream image size does not fit this model: {exc.message}") from exc
    if len(stream.latents) != len(model.card.latents):
        raise CorruptBitstream(f"bitstream holds {len(stream.latents)} latents, the model codes {len(model.card.latents)}")
    for spec, (shape, payload) in zip(model.card.latents, stream.latents):
        want = expected_latent_shape(spec, plan)
        if want is not None and tuple(shape) != want:
            raise CorruptBitstream(f"latent {spec.name!r} is shaped {tuple(shape)} in the stream, expected {want}")
        if want is None and (not shape or math.prod(shape) > 64 * plan.model_height * plan.model_width * 4):
            raise CorruptBitstream(f"latent {spec.name!r} shape {tuple(shape)} is implausible")
        needed = min_payload_bytes(model, spec, math.prod(shape))
        if len(payload) < needed:
            raise CorruptBitstream(
                f"latent {spec.name!r} of shape {tuple(shape)} needs at least {needed} payload bytes under this "
                f"model's entropy tables, the stream holds {len(payload)}: truncated, or a header claiming a "
                f"bigger image ({stream.width}x{stream.height}) than the payload codes"
            )
    return plan


#: Probability at or below which a latent's lowest symbol counts as improbable (see `min_payload_bytes`).
_IMPROBABLE_FIRST = 2.0**-8


def min_payload_bytes(model: LoadedModel, spec: LatentSpec, count: int) -> int:
    """A lower bound on the payload an encoder writes for `count` symbols of a categorical latent: every
    symbol costs at least -log2 of its channel's most probable symbol, and a range coder cannot beat the
    information content. Loose on purpose (90% of the bound, less 8 bytes for the coder's flush), so only
    a payload far too short for its claimed shape is refused, before the decoder would run out of input
    and fill the claimed size with padding (a 42-byte stream "decoding" a 4096² image).

    One exception makes it conditional: the format strips trailing zero bytes, so a run of each
    channel's *first* symbol at the end costs nothing. The bound is applied only where that symbol is
    improbable (p <= 2^-8 in every channel: the clipped extreme of a trained latent), never for latents
    whose lowest symbol is common (an autoencoder's 0 on a black background), and never to Gaussian
    latents, whose cheapest symbol can cost almost nothing."""
    if spec.coding != "categorical" or count <= 0 or spec.name not in model.tables:
        return 0
    table = np.asarray(model.tables[spec.name], dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != spec.channels or np.any(table <= 0):
        return 0
    probs = table / table.sum(axis=1, keepdims=True)
    if np.any(probs[:, 0] > _IMPROBABLE_FIRST):
        return 0
    bits_per_position = float(np.sum(-np.log2(probs.max(axis=1))))  # one symbol of every channel
    bits = count / spec.channels * bits_per_position
    return max(0, math.floor((0.9 * bits - 64) / 8))


def expected_latent_shape(spec: LatentSpec, plan: imaging.SizePlan) -> tuple[int, ...] | None:
    if spec.shape:
        return tuple(spec.shape)
    if spec.stride:
        return (math.ceil(plan.model_height / spec.stride), math.ceil(plan.model_width / (spec.stride_x or spec.stride)),
                spec.channels)
    return None
