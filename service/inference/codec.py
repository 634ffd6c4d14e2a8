"""Image ↔ bitstream through a loaded model: size plan, `encode`/`decode` signatures, entropy coding.

The bitstream records the ORIGINAL image size and channels, so `decode` can undo padding or resizing
and hand back what was sent; bpp is computed from the real stream length over the original pixels.
Streams are checked against the model before any decoding work: tables hash, plausible sizes, latent
shapes (a CRC is not a security check, so a crafted stream must not buy a huge allocation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract import sizing
from contract.bitstream import Bitstream, write_stream
from contract.card import quality_hundredths, quality_value
from contract.entropy import (
    CodingSteps,
    EntropyCodingError,
    decode_latents,
    decoding_steps,
    encoding_steps,
)
from service.inference import imaging, msssim, tiling
from service.inference.errors import (
    CorruptBitstream,
    InvalidEffort,
    InvalidQuality,
    TargetTooSmall,
)
from service.inference.loaded import LoadedModel
from service.inference.stream_checks import check, parse

__all__ = [
    "DEFAULT_EFFORT_MAX_PIXELS",
    "MAX_SEARCH_ENCODES",
    "Encoded",
    "Reconstruction",
    "SizeTarget",
    "check",
    "decode",
    "encode",
    "model_effort",
    "model_quality",
    "pack",
    "parse",
    "quality_input",
    "reconstruct",
    "search",
    "size_target",
    "unpack",
]


@dataclass(frozen=True)
class Encoded:
    stream: bytes
    plan: imaging.SizePlan
    channels: int
    quality: float | None = None
    search_encodes: int | None = None  # with a size target: how many encodes the search ran

    @property
    def bpp(self) -> float:
        return len(self.stream) * 8 / (self.plan.height * self.plan.width)


@dataclass(frozen=True)
class Reconstruction:
    pixels: np.ndarray  # uint8 [H, W, original channels], original size
    plan: imaging.SizePlan
    mse: float
    psnr: float | None
    quality: float | None = None
    ms_ssim: float | None = None  # None: smaller than msssim.MIN_SIDE on a side, or over the pixel limit
    stream_bytes: int | None = None  # with a size target: the length of the stream the pixels decode from
    search_encodes: int | None = None

    @property
    def bpp(self) -> float | None:
        return None if self.stream_bytes is None else self.stream_bytes * 8 / (self.plan.height * self.plan.width)


# ---- size targets ------------------------------------------------------------------------------------
#: The most encodes a size target (`?max_bytes=`, `?target_bpp=`) costs per image. The search bisects
#: the quality in hundredths (what a stream records): the top quality first (it fits: done, 1 encode),
#: then the bottom (it does not fit: 422 naming its size, 2 encodes), then halves the interval between a
#: quality that fits and one that does not until they are 0.01 apart: 2 + ceil(log2(steps)) encodes,
#: 12 for qualities 1-8 (700 steps). A model with more than 1025 steps stops at this bound with the best
#: quality found so far (it still fits; a quality up to its interval's width higher might too).
MAX_SEARCH_ENCODES = 12


@dataclass(frozen=True)
class SizeTarget:
    """The largest stream a request accepts per image: `max_bytes`, or `bpp` of the original image."""

    max_bytes: int | None = None
    bpp: float | None = None

    def __post_init__(self) -> None:
        if (self.max_bytes is None) == (self.bpp is None):
            raise TypeError("a size target is max_bytes or bpp")

    def limit(self, plan: imaging.SizePlan) -> int:
        if self.max_bytes is not None:
            return self.max_bytes
        assert self.bpp is not None
        return math.floor(self.bpp * plan.height * plan.width / 8)

    def describe(self, plan: imaging.SizePlan) -> str:
        if self.max_bytes is not None:
            return f"max_bytes={self.max_bytes}"
        return f"target_bpp={self.bpp:g} ({self.limit(plan)} bytes for {plan.width}x{plan.height} pixels)"


def size_target(max_bytes: int | None, bpp: float | None) -> SizeTarget | None:
    return None if max_bytes is None and bpp is None else SizeTarget(max_bytes, bpp)


# ---- quality -----------------------------------------------------------------------------------------
def model_quality(model: LoadedModel, requested: float | None) -> int | None:
    """The quality a variable-rate model codes at, in hundredths (what the stream records); None for
    a single-rate model. Snapped to hundredths here, so encode and decode feed the model one number."""
    rate = model.card.rate
    if rate is None:
        if requested is not None:
            raise InvalidQuality(f"model {model.name} codes at a single rate and takes no quality")
        return None
    try:
        return rate.hundredths(requested)
    except ValueError as exc:
        raise InvalidQuality(f"{exc} (model {model.name})") from None


# ---- encoder effort ----------------------------------------------------------------------------------
#: The largest image (pixels at the model's size) a request may refine (`?effort=` > 0): refinement's CPU
#: time and memory grow with pixels × steps. 2^21: a 1920 × 1080 frame fits.
DEFAULT_EFFORT_MAX_PIXELS = 1 << 21


def model_effort(model: LoadedModel, requested: int | None) -> int:
    """The effort to encode at (0 when none is asked for); InvalidEffort when the model cannot refine
    or the value is out of its range."""
    if not requested:
        return 0
    spec = model.card.effort
    if spec is None:
        raise InvalidEffort(f"model {model.name} version {model.version} has no encoder effort setting "
                            "(its encoder does not refine latents): leave effort out or use 0")
    if not 0 <= requested <= spec.max_effort:
        raise InvalidEffort(f"effort must lie in [0, {spec.max_effort}] for model {model.name}, not {requested}")
    return requested


def one_image_with_effort(effort: int, images: int) -> None:
    """A request that refines takes one image: its refinement holds the request's pixel budget for
    minutes, and refinements run one at a time (`LoadedModel`), so several images would hold the budget
    for their sum and mostly wait (or find the refinement queue full)."""
    if effort and images > 1:
        raise InvalidEffort(f"effort refines one image per request; this request has {images}: send them one "
                            "at a time, or use effort 0 for a batch")


def _check_effort_size(model: LoadedModel, plan: imaging.SizePlan, effort: int, max_pixels: int) -> None:
    pixels = plan.model_height * plan.model_width
    if effort and max_pixels <= 0:
        raise InvalidEffort("this server has encoder effort turned off (AEC_EFFORT_MAX_PIXELS=0): use effort 0")
    if effort and pixels > max_pixels:
        raise InvalidEffort(f"effort {effort} refines the latents of images up to {max_pixels} pixels "
                            f"(AEC_EFFORT_MAX_PIXELS); this one is {plan.width}x{plan.height} ({pixels} pixels at "
                            "the model's size): encode it with effort 0, or smaller")


def _checked(model: LoadedModel, quality: float | None, hundredths: int | None) -> int | None:
    if hundredths is None:
        return model_quality(model, quality)
    if quality is not None:
        raise TypeError("give quality or hundredths, not both")
    return hundredths


def quality_input(hundredths: int | None) -> dict[str, np.ndarray]:
    """The signatures' extra input for one image (none for a single-rate model)."""
    return {} if hundredths is None else {"quality": np.float32(quality_value(hundredths))}


def _model_tiling(model: LoadedModel, tiles: tiling.Tiling | None) -> tiling.Tiling | None:
    """The server's tiling with the model's halo (its card's, unless the operator set one)."""
    return None if tiles is None else tiles.for_model(model.card.input.tile_halo)


def _tiled(model: LoadedModel, plan: imaging.SizePlan, tiles: tiling.Tiling | None) -> bool:
    """Whether this image goes through the model in tiles (any-size models, bigger than one tile)."""
    return bool(tiles and model.card.input.any_size and tiles.applies(plan.model_height, plan.model_width))


def _seen(model: LoadedModel, source: imaging.SourceImage, plan: imaging.SizePlan,
          tiles: tiling.Tiling | None) -> np.ndarray:
    """The model's view of `source`: float32 at the model's size, or, for an image that runs in tiles,
    padded in its own dtype and channels (each tile becomes float on its way in: `tiling.encode`)."""
    return imaging.model_input(source, plan, model.card.input.channels, as_float=not _tiled(model, plan, tiles))


def _work(plan: imaging.SizePlan) -> int:
    """Pixels a conversion between the upload and the model touches (the larger of the two sizes)."""
    return max(plan.height * plan.width, plan.model_height * plan.model_width)


async def _encode_latents(model: LoadedModel, seen: np.ndarray, plan: imaging.SizePlan,
                          tiles: tiling.Tiling | None, quality: int | None, effort: int = 0) -> dict[str, np.ndarray]:
    extra = quality_input(quality)
    signature = "encode"
    if effort:
        assert model.card.effort is not None  # model_effort checked it
        signature, extra = model.card.effort.signature, extra | {"effort": np.int32(effort)}
    if _tiled(model, plan, tiles):
        assert tiles is not None
        return await tiling.encode(model.call, seen, model.card.latents, tiles, model.card.input.size_multiple,
                                   extra, channels=model.card.input.channels, signature=signature)
    return await model.call(signature, {"images": seen, **extra})


async def _decode_latents(model: LoadedModel, latents: dict[str, np.ndarray], plan: imaging.SizePlan,
                          tiles: tiling.Tiling | None, quality: int | None) -> np.ndarray:
    extra = quality_input(quality)
    if _tiled(model, plan, tiles):
        assert tiles is not None
        return await tiling.decode(model.call, latents, model.card.latents, plan.model_height, plan.model_width,
                                   tiles, model.card.input.size_multiple, extra)
    return (await model.call("decode", {**latents, **extra}))["images"]


# ---- encode ----------------------------------------------------------------------------------------
async def encode(model: LoadedModel, source: imaging.SourceImage, tiles: tiling.Tiling | None = None,
                 quality: float | None = None, *, hundredths: int | None = None,
                 target: SizeTarget | None = None, effort: int = 0,
                 effort_max_pixels: int = DEFAULT_EFFORT_MAX_PIXELS) -> Encoded:
    """`quality`: variable-rate models only, the card's default when None (InvalidQuality otherwise);
    or `hundredths`, a quality already checked by `model_quality` (a route that reports it first);
    or `target`: the highest quality whose stream fits (`search`; not with a quality).
    `effort`: latent refinement before coding (models with `card.effort`; not with a target)."""
    plan = imaging.plan_size(source.height, source.width, model.card.input)
    effort = _effort_for(model, plan, effort, target, effort_max_pixels)
    tiles = _effort_tiling(model, tiles, effort)
    if target is not None:
        if quality is not None or hundredths is not None:
            raise TypeError("give a quality or a size target, not both")
        seen = await imaging.off_loop(_work(plan), _seen, model, source, plan, tiles)
        found, encodes = await search(model, seen, plan, source.channels, tiles, target)
        return Encoded(found.stream, plan, source.channels, quality_value(found.hundredths), encodes)
    hundredths = _checked(model, quality, hundredths)
    seen = await imaging.off_loop(_work(plan), _seen, model, source, plan, tiles)
    coded = await _code(model, seen, plan, source.channels, tiles, hundredths, effort)
    return Encoded(coded.stream, plan, source.channels, quality_value(hundredths))


def _effort_tiling(model: LoadedModel, tiles: tiling.Tiling | None, effort: int) -> tiling.Tiling | None:
    """The model's tiling, or none when refining: each tile would refine its halo its own way, so the
    latents one tile keeps would be coded against means from its neighbours' different halos (seams,
    and a stream that depends on the tile size). A refined image runs whole, bounded by
    AEC_EFFORT_MAX_PIXELS."""
    return None if effort else _model_tiling(model, tiles)


def _effort_for(model: LoadedModel, plan: imaging.SizePlan, effort: int, target: SizeTarget | None,
                max_pixels: int) -> int:
    effort = model_effort(model, effort)
    if effort and target is not None:
        raise InvalidEffort("effort refines the latents for one quality and a size target searches over "
                            "qualities: find the quality with the target (X-Quality), then encode at that "
                            "quality with effort")
    _check_effort_size(model, plan, effort, max_pixels)
    return effort


@dataclass(frozen=True)
class _Coded:
    stream: bytes
    latents: dict[str, np.ndarray]  # what the stream codes (one image, no batch axis)
    hundredths: int | None


async def _code(model: LoadedModel, seen: np.ndarray, plan: imaging.SizePlan, channels: int,
                tiles: tiling.Tiling | None, hundredths: int | None, effort: int = 0) -> _Coded:
    """One encode of the model's view of an image: latents, range coding, the stream's bytes."""
    latents = await _encode_latents(model, seen, plan, tiles, hundredths, effort)
    payloads = await _coded(model, encoding_steps(model.card.latents, latents, model.tables))
    stream = dataclasses.replace(_header(model, plan, channels, hundredths), latents=payloads).to_bytes()
    return _Coded(stream, latents, hundredths)


async def search(model: LoadedModel, seen: np.ndarray, plan: imaging.SizePlan, channels: int,
                 tiles: tiling.Tiling | None, target: SizeTarget) -> tuple[_Coded, int]:
    """The highest quality (in hundredths) whose stream fits `target`, by bisection (see
    MAX_SEARCH_ENCODES), and how many encodes it took. When the search ends normally, the quality
    found fits and 0.01 more does not (or it is the model's highest). TargetTooSmall when even the
    lowest quality does not fit, naming its size; a single-rate model is encoded once, fit or 422."""
    limit = target.limit(plan)
    encodes = 0

    async def at(hundredths: int | None) -> _Coded:
        nonlocal encodes
        encodes += 1
        return await _code(model, seen, plan, channels, tiles, hundredths)

    def too_big(coded: _Coded, what: str) -> TargetTooSmall:
        size = len(coded.stream)
        return TargetTooSmall(
            f"{what} of this {plan.width}x{plan.height} image is {size} bytes ({size * 8 / (plan.height * plan.width):.4f} "
            f"bpp), over {target.describe(plan)}: the smallest size possible with model {model.name} "
            f"version {model.version} is {size} bytes")

    rate = model.card.rate
    if rate is None:
        only = await at(None)
        if len(only.stream) > limit:
            raise too_big(only, f"model {model.name} codes at a single rate: its stream")
        return only, encodes
    low, high = quality_hundredths(rate.min_quality), quality_hundredths(rate.max_quality)
    top = await at(high)
    if len(top.stream) <= limit:
        return top, encodes
    best = await at(low)
    if len(best.stream) > limit:
        raise too_big(best, f"the stream at the lowest quality ({rate.min_quality:g})")
    while high - low > 1 and encodes < MAX_SEARCH_ENCODES:  # low fits, high does not
        middle = (low + high) // 2
        coded = await at(middle)
        if len(coded.stream) <= limit:
            low, best = middle, coded
        else:
            high = middle
    return best, encodes


def pack(model: LoadedModel, latents: dict[str, np.ndarray], plan: imaging.SizePlan, channels: int,
         quality: int | None = None) -> bytes:
    """Entropy-code one image's latents (no batch axis) and wrap them in the bitstream header, calling
    the parameter stages directly (the load-time check and benches; requests go through `encode`)."""
    return write_stream(_header(model, plan, channels, quality), model.card.latents, latents, model.tables,
                        model.scale_fn())


def _header(model: LoadedModel, plan: imaging.SizePlan, channels: int, quality: int | None) -> Bitstream:
    return Bitstream(model.name, model.version, model.tables_hash, plan.height, plan.width, channels,
                     quality_hundredths=quality)


async def _coded(model: LoadedModel, steps: CodingSteps) -> Any:
    """Run a coding loop of the contract (`encoding_steps`/`decoding_steps`): each range-coding step in
    a worker thread, off the event loop, and each parameter stage between steps through the model's
    micro-batcher (`LoadedModel.call_stage`), so every TensorFlow call of a request is batched, runs on
    the model executor and is in the metrics."""
    stages = model.stages()
    request = await asyncio.to_thread(_advance, steps, None)
    while not isinstance(request, _Done):
        name, coded = request
        if stages is None:
            raise EntropyCodingError(f"latent {name!r} needs a parameter stage, and the model has none")
        index = await model.call_stage(stages, name, coded)
        request = await asyncio.to_thread(_advance, steps, index)
    return request.value


@dataclass(frozen=True)
class _Done:
    value: Any


def _advance(steps: CodingSteps, index: np.ndarray | None) -> tuple[str, Any] | _Done:
    """One step of a coding loop; its end as a value (StopIteration cannot cross a thread's future)."""
    try:
        return next(steps) if index is None else steps.send(index)
    except StopIteration as done:
        return _Done(done.value)


# ---- decode ----------------------------------------------------------------------------------------
def unpack(model: LoadedModel, stream: Bitstream) -> dict[str, np.ndarray]:
    """Entropy-decode a checked stream, calling the parameter stages directly (the load-time check and
    benches; requests go through `decode`); latents come back without a batch axis."""
    try:
        latents = decode_latents(model.card.latents, stream.latents, model.tables, model.scale_fn())
    except EntropyCodingError as exc:
        raise CorruptBitstream(f"bitstream payload cannot be decoded: {exc}") from exc
    return {name: value[0] for name, value in latents.items()}


async def decode(model: LoadedModel, stream: Bitstream, max_pixels: int,
                 tiles: tiling.Tiling | None = None) -> tuple[np.ndarray, imaging.SizePlan]:
    """Bitstream → uint8 pixels at the original size and channels. Every size check runs first
    (`check`); the entropy decode and the conversion back to the original size (a resize of up to
    `max_pixels`) run off the event loop."""
    tiles = _model_tiling(model, tiles)
    plan = check(model, stream, max_pixels)
    try:
        decoded = await _coded(model, decoding_steps(model.card.latents, stream.latents, model.tables))
    except EntropyCodingError as exc:
        raise CorruptBitstream(f"bitstream payload cannot be decoded: {exc}") from exc
    latents = {name: value[0] for name, value in decoded.items()}
    images = await _decode_latents(model, latents, plan, tiles, stream.quality_hundredths)
    return await imaging.off_loop(_work(plan), imaging.output_image, images, plan, stream.channels), plan


# ---- reconstruct -----------------------------------------------------------------------------------
async def reconstruct(model: LoadedModel, source: imaging.SourceImage,
                      tiles: tiling.Tiling | None = None, quality: float | None = None, *,
                      hundredths: int | None = None, target: SizeTarget | None = None,
                      ms_ssim_max_pixels: int = msssim.DEFAULT_MAX_PIXELS, effort: int = 0,
                      effort_max_pixels: int = DEFAULT_EFFORT_MAX_PIXELS) -> Reconstruction:
    """As `encode` for `quality`, `hundredths`, `target` and `effort`; with a target, the pixels are the
    decode of the stream the search found (its latents, as /decode would read them back). MSE, PSNR and
    MS-SSIM (images up to `ms_ssim_max_pixels`, on the model executor; `msssim`) against what the model saw."""
    plan = imaging.plan_size(source.height, source.width, model.card.input)
    effort = _effort_for(model, plan, effort, target, effort_max_pixels)
    decoding = _model_tiling(model, tiles)  # the decode goes as /decode's would, tiled or not
    tiles = _effort_tiling(model, tiles, effort)
    stream_bytes = encodes = None
    if target is not None:
        if quality is not None or hundredths is not None:
            raise TypeError("give a quality or a size target, not both")
        seen = await imaging.off_loop(_work(plan), _seen, model, source, plan, tiles)
        found, encodes = await search(model, seen, plan, source.channels, tiles, target)
        hundredths, stream_bytes = found.hundredths, len(found.stream)
        latents = {spec.name: np.asarray(found.latents[spec.name], np.int32) for spec in model.card.latents}
        output = await _decode_latents(model, latents, plan, tiles, hundredths)
    else:
        hundredths = _checked(model, quality, hundredths)
        seen = await imaging.off_loop(_work(plan), _seen, model, source, plan, tiles)
        if effort or _tiled(model, plan, decoding):  # decode(encode(x)), tile by tile if tiled, as a stream would go
            latents = await _encode_latents(model, seen, plan, tiles, hundredths, effort)
            output = await _decode_latents(model, latents, plan, decoding, hundredths)
        else:
            output = (await model.call("reconstruct", {"images": seen, **quality_input(hundredths)}))["images"]
    mse, psnr, pixels = await imaging.off_loop(_work(plan), _measure_and_restore, seen, output, plan, source.channels)
    ms_ssim = await msssim.measure(model.executor, sizing.valid_region(seen, plan), sizing.valid_region(output, plan),
                                   ms_ssim_max_pixels)
    return Reconstruction(pixels, plan, mse, psnr, quality_value(hundredths), ms_ssim, stream_bytes, encodes)


def _measure_and_restore(seen: np.ndarray, output: np.ndarray, plan: imaging.SizePlan,
                         channels: int) -> tuple[float, float | None, np.ndarray]:
    """PSNR against what the model saw, and the output back at the original size and channels."""
    mse, psnr = imaging.mse_psnr(sizing.valid_region(seen, plan), sizing.valid_region(output, plan))
    return mse, psnr, imaging.output_image(output, plan, channels)
