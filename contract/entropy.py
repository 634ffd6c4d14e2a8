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
from collections.abc import Callable, Mapping, Sequence

import constriction
import numpy as np

from contract.card import LatentSpec

# Given the latents decoded so far (each with a leading batch axis of 1), return the scale indices of
# one Gaussian latent, shaped like that latent (leading batch axis of 1).
ScaleFn = Callable[[str, Mapping[str, np.ndarray]], np.ndarray]
# Run one parameter stage (a signature name) on named int32 inputs; returns its named outputs.
StageFn = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def staged_scales(specs: Sequence[LatentSpec], run: StageFn, inputs_of: Mapping[str, Sequence[str]]) -> ScaleFn:
    """A ScaleFn for ONE image: each Gaussian latent's `scale_source` stage is run on the inputs it
    declares (`inputs_of[stage]`), looked up among the latents coded so far and what earlier stages
    returned. Make a new one per image: it carries that image's stage outputs."""
    sources = {spec.name: spec.scale_source for spec in specs if spec.coding == "gaussian"}
    carried: dict[str, np.ndarray] = {}

    def scales(name: str, coded: Mapping[str, np.ndarray]) -> np.ndarray:
        stage = sources.get(name)
        if stage is None or stage not in inputs_of:
            raise EntropyCodingError(f"latent {name!r} has no parameter stage {stage!r}")
        feed = {}
        for key in inputs_of[stage]:
            value = coded.get(key, carried.get(key))
            if value is None:
                raise EntropyCodingError(f"stage {stage!r} needs {key!r}, which is neither a latent coded "
                                         f"before {name!r} nor an output of an earlier stage")
            feed[key] = np.asarray(value, dtype=np.int32)
        outputs = run(stage, feed)
        carried.update((key, np.asarray(value)) for key, value in outputs.items() if key != name)
        return np.asarray(outputs[name])

    return scales


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
            stds = _gaussian_stds(spec, scale_fn, coded, symbols.shape)
            model = constriction.stream.model.QuantizedGaussian(spec.min_symbol, spec.max_symbol)
            encoder.encode(symbols.reshape(-1).astype(np.int32), model, np.zeros_like(stds), stds)
        out.append((tuple(int(d) for d in symbols.shape), _pack(encoder.get_compressed())))
        coded[spec.name] = symbols[None]
    return out


def decode_latents(
    specs: Sequence[LatentSpec],
    payloads: Sequence[tuple[tuple[int, ...], bytes]],
    tables: Mapping[str, np.ndarray],
    scale_fn: ScaleFn | None = None,
) -> dict[str, np.ndarray]:
    """Inverse of `encode_latents`; returns int32 latents with a leading batch axis of 1."""
    if len(payloads) != len(specs):
        raise EntropyCodingError(f"stream holds {len(payloads)} latents, the model codes {len(specs)}")
    decoded: dict[str, np.ndarray] = {}
    for spec, (shape, payload) in zip(specs, payloads):
        if not shape or shape[-1] != spec.channels:
            raise EntropyCodingError(f"latent {spec.name!r} shape {shape} does not match the model")
        count = int(np.prod(shape))
        decoder = constriction.stream.queue.RangeDecoder(_unpack(payload))
        try:
            if spec.coding == "categorical":
                n = count // spec.channels
                columns = [decoder.decode(model, n) for model in _categorical_models(tables[spec.name])]
                symbols = np.stack(columns, axis=-1) + spec.min_symbol
            else:
                stds = _gaussian_stds(spec, scale_fn, decoded, shape)
                model = constriction.stream.model.QuantizedGaussian(spec.min_symbol, spec.max_symbol)
                symbols = decoder.decode(model, np.zeros_like(stds), stds)
        except Exception as exc:  # constriction raises plain errors on exhausted/invalid data
            raise EntropyCodingError(f"payload of latent {spec.name!r} cannot be decoded: {exc}") from exc
        decoded[spec.name] = np.asarray(symbols, dtype=np.int32).reshape((1, *shape))
    return decoded


def _gaussian_stds(
    spec: LatentSpec, scale_fn: ScaleFn | None, coded: Mapping[str, np.ndarray], shape: Sequence[int]
) -> np.ndarray:
    if scale_fn is None:
        raise EntropyCodingError(f"latent {spec.name!r} needs a scale function ({spec.scale_source})")
    index = np.asarray(scale_fn(spec.name, coded)).reshape(-1)
    if index.size != int(np.prod(shape)):
        raise EntropyCodingError(f"scale indices for {spec.name!r} do not match its shape {tuple(shape)}")
    table = np.asarray(spec.scale_table, dtype=np.float64)
    return table[np.clip(index, 0, len(table) - 1)]
