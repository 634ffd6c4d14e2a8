"""Entropy coding of integer latents with `constriction`'s range coder, driven only by the model card.

Training measures real bpp with this module and the service encodes/decodes with it, so the two
always agree. No TensorFlow here: conditional scales come from a callback, called identically when
encoding and decoding, so both sides feed the coder the same model parameters. `staged_scales` builds
that callback from a model's parameter stages: the signature a Gaussian latent names as its
`scale_source` takes inputs by name — latents coded before it, or tensors an earlier stage returned —
and returns the latent's scale indices under the latent's own name (anything else it returns is carried
to later stages). A plain hyperprior has one stage (`hyper_decode(z) → {"y"}`); a channel-conditional
codec has one per slice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import constriction
import numpy as np

from contract.card import LatentSpec

# Given the latents decoded so far (each with a leading batch axis of 1), return the scale indices of
# one Gaussian latent, shaped like that latent (leading batch axis of 1).
ScaleFn = Callable[[str, Mapping[str, np.ndarray]], np.ndarray]
# Run one parameter stage (a signature name) on named int32 inputs; returns its named outputs.
StageFn = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class StagedScales:
    """The parameter stages of ONE image, split into what to run and what to make of its outputs, so
    that the caller decides how a stage runs (directly, or through a server's micro-batcher): `request`
    names the stage a Gaussian latent's `scale_source` is and feeds it the inputs it declares
    (`inputs_of[stage]`), looked up among the latents coded so far and what earlier stages returned;
    `receive` keeps the outputs later stages read and returns the latent's scale indices. Make a new one
    per image: it carries that image's stage outputs."""

    def __init__(self, specs: Sequence[LatentSpec], inputs_of: Mapping[str, Sequence[str]]) -> None:
        self._sources = {spec.name: spec.scale_source for spec in specs if spec.coding == "gaussian"}
        self._inputs_of = inputs_of
        self._carried: dict[str, np.ndarray] = {}

    def request(self, name: str, coded: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        """(stage, its int32 inputs, each with a leading batch axis of 1) for latent `name`."""
        stage = self._sources.get(name)
        if stage is None or stage not in self._inputs_of:
            raise EntropyCodingError(f"latent {name!r} has no parameter stage {stage!r}")
        feed = {}
        for key in self._inputs_of[stage]:
            value = coded.get(key, self._carried.get(key))
            if value is None:
                raise EntropyCodingError(f"stage {stage!r} needs {key!r}, which is neither a latent coded "
                                         f"before {name!r} nor an output of an earlier stage")
            feed[key] = np.asarray(value, dtype=np.int32)
        return stage, feed

    def receive(self, name: str, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The scale indices of latent `name` from its stage's outputs (the rest is kept for later)."""
        self._carried.update((key, np.asarray(value)) for key, value in outputs.items() if key != name)
        if name not in outputs:
            raise EntropyCodingError(f"the parameter stage of {name!r} returned no {name!r}")
        return np.asarray(outputs[name])


def staged_scales(specs: Sequence[LatentSpec], run: StageFn, inputs_of: Mapping[str, Sequence[str]]) -> ScaleFn:
    """A ScaleFn for ONE image that runs each stage synchronously with `run` (see `StagedScales`)."""
    stages = StagedScales(specs, inputs_of)

    def scales(name: str, coded: Mapping[str, np.ndarray]) -> np.ndarray:
        return stages.receive(name, run(*stages.request(name, coded)))

    return scales


#: A coding loop as a generator: it yields (latent name, the latents coded so far) whenever a Gaussian
#: latent needs its scale indices, is sent them back, and returns its result. One loop serves a
#: synchronous caller (`drive`) and an asynchronous one that runs stages elsewhere between steps.
ScaleRequest = tuple[str, Mapping[str, np.ndarray]]
CodingSteps = Generator[ScaleRequest, np.ndarray, Any]


def drive(steps: CodingSteps, scale_fn: ScaleFn | None) -> Any:
    """Run a coding loop to its end, answering its scale requests with `scale_fn`."""
    try:
        request = next(steps)
        while True:
            name, coded = request
            if scale_fn is None:
                raise EntropyCodingError(f"latent {name!r} needs a scale function")
            request = steps.send(np.asarray(scale_fn(name, coded)))
    except StopIteration as done:
        return done.value


class EntropyCodingError(ValueError):
    """Symbols or a payload that cannot be coded with the given model."""


def _pack(words: np.ndarray) -> bytes:
    # Trailing zero bytes of the last word carry no information: strip them, restore on unpack.
    return words.astype("<u4").tobytes().rstrip(b"\x00")


def _unpack(payload: bytes) -> np.ndarray:
    padded = payload + b"\x00" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)


def _categorical_models(table: np.ndarray) -> list:
    """Constriction models per channel, built once per distinct table (every request reuses them)."""
    probs = np.ascontiguousarray(table, dtype=np.float64)
    return _categorical_models_cached(probs.tobytes(), probs.shape)


@functools.lru_cache(maxsize=64)
def _categorical_models_cached(data: bytes, shape: tuple[int, ...]) -> list:
    probs = np.frombuffer(data, dtype=np.float64).reshape(shape)
    if probs.ndim != 2 or np.any(probs <= 0):
        raise EntropyCodingError("categorical tables must be [channels, symbols] and strictly positive")
    probs = probs / probs.sum(axis=1, keepdims=True)
    return [constriction.stream.model.Categorical(row, perfect=False) for row in probs]


def encode_latents(
    specs: Sequence[LatentSpec],
    latents: Mapping[str, np.ndarray],
    tables: Mapping[str, np.ndarray],
    scale_fn: ScaleFn | None = None,
) -> list[tuple[tuple[int, ...], bytes]]:
    """Code one image's latents (no batch axis) in card order; returns (shape, payload) per latent."""
    return drive(encoding_steps(specs, latents, tables), scale_fn)


def decode_latents(
    specs: Sequence[LatentSpec],
    payloads: Sequence[tuple[tuple[int, ...], bytes]],
    tables: Mapping[str, np.ndarray],
    scale_fn: ScaleFn | None = None,
) -> dict[str, np.ndarray]:
    """Inverse of `encode_latents`; returns int32 latents with a leading batch axis of 1."""
    return drive(decoding_steps(specs, payloads, tables), scale_fn)


def encoding_steps(specs: Sequence[LatentSpec], latents: Mapping[str, np.ndarray],
                   tables: Mapping[str, np.ndarray]) -> CodingSteps:
    """`encode_latents` as a coding loop (see `CodingSteps`)."""
    out: list[tuple[tuple[int, ...], bytes]] = []
    coded: dict[str, np.ndarray] = {}
    for spec in specs:
        symbols = np.asarray(latents[spec.name])
        if symbols.shape[-1] != spec.channels:
            raise EntropyCodingError(f"latent {spec.name!r} has {symbols.shape[-1]} channels, not {spec.channels}")
        if symbols.min(initial=spec.min_symbol) < spec.min_symbol or symbols.max(initial=spec.max_symbol) > spec.max_symbol:
            raise EntropyCodingError(f"latent {spec.name!r} has symbols outside [{spec.min_symbol}, {spec.max_symbol}]")
        encoder = constriction.stream.queue.RangeEncoder()
        if spec.coding == "categorical":
            flat = symbols.reshape(-1, spec.channels) - spec.min_symbol
            for channel, model in enumerate(_categorical_models(tables[spec.name])):
                encoder.encode(np.ascontiguousarray(flat[:, channel], dtype=np.int32), model)
        else:
            stds = _gaussian_stds(spec, (yield spec.name, coded), symbols.shape)
            model = constriction.stream.model.QuantizedGaussian(spec.min_symbol, spec.max_symbol)
            encoder.encode(symbols.reshape(-1).astype(np.int32), model, np.zeros_like(stds), stds)
        out.append((tuple(int(d) for d in symbols.shape), _pack(encoder.get_compressed())))
        coded[spec.name] = symbols[None]
    return out


def decoding_steps(specs: Sequence[LatentSpec], payloads: Sequence[tuple[tuple[int, ...], bytes]],
                   tables: Mapping[str, np.ndarray]) -> CodingSteps:
    """`decode_latents` as a coding loop (see `CodingSteps`)."""
    if len(payloads) != len(specs):
        raise EntropyCodingError(f"stream holds {len(payloads)} latents, the model codes {len(specs)}")
    decoded: dict[str, np.ndarray] = {}
    for spec, (shape, payload) in zip(specs, payloads):
        if not shape or shape[-1] != spec.channels:
            raise EntropyCodingError(f"latent {spec.name!r} shape {shape} does not match the model")
        count = int(np.prod(shape))
        stds = _gaussian_stds(spec, (yield spec.name, decoded), shape) if spec.coding == "gaussian" else None
        decoder = constriction.stream.queue.RangeDecoder(_unpack(payload))
        try:
            if stds is None:
                n = count // spec.channels
                columns = [decoder.decode(model, n) for model in _categorical_models(tables[spec.name])]
                symbols = np.stack(columns, axis=-1) + spec.min_symbol
            else:
                model = constriction.stream.model.QuantizedGaussian(spec.min_symbol, spec.max_symbol)
                symbols = decoder.decode(model, np.zeros_like(stds), stds)
        except Exception as exc:  # constriction raises plain errors on exhausted/invalid data
            raise EntropyCodingError(f"payload of latent {spec.name!r} cannot be decoded: {exc}") from exc
        decoded[spec.name] = np.asarray(symbols, dtype=np.int32).reshape((1, *shape))
    return decoded


def _gaussian_stds(spec: LatentSpec, index: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    index = np.asarray(index).reshape(-1)
    if index.size != int(np.prod(shape)):
        raise EntropyCodingError(f"scale indices for {spec.name!r} do not match its shape {tuple(shape)}")
    table = np.asarray(spec.scale_table, dtype=np.float64)
    return table[np.clip(index, 0, len(table) - 1)]
