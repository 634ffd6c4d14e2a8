"""Property tests of the bitstream parser and the entropy decoder: hostile bytes end in the one
documented exception (BitstreamError / EntropyCodingError, which the service maps to 4xx), never in
another exception, a hang or an allocation sized by what the stream claims."""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.bitstream import MAGIC, Bitstream, BitstreamError, _varint
from contract.card import LatentSpec
from contract.entropy import EntropyCodingError, decode_latents, encode_latents

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda s: 0 < len(s.encode()) < 256
)
dims = st.integers(0, (1 << 31) - 1)
latents = st.lists(
    st.tuples(st.lists(st.integers(0, 5000), min_size=0, max_size=8).map(tuple), st.binary(max_size=64)),
    max_size=4,
)
streams = st.builds(
    Bitstream, names, dims, st.binary(min_size=4, max_size=4), dims, dims,
    st.integers(0, 255), latents,
)


def _recrc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _parse(data: bytes) -> Bitstream | None:
    try:
        return Bitstream.from_bytes(data)
    except BitstreamError:
        return None


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([b"", MAGIC, MAGIC + b"\x01"]))
def test_random_bytes_parse_or_raise_bitstream_error(data: bytes, prefix: bytes) -> None:
    _parse(prefix + data)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bodies_with_a_valid_crc_parse_or_raise_bitstream_error(body: bytes) -> None:
    """The CRC is not a security check: a forger recomputes it, so the parser itself must hold."""
    parsed = _parse(_recrc(MAGIC + b"\x01" + body))
    if parsed is not None:
        assert parsed.to_bytes() == _recrc(MAGIC + b"\x01" + body)  # a parse is exact, never lenient


@FUZZ
@given(streams)
def test_round_trip(stream: Bitstream) -> None:
    assert Bitstream.from_bytes(stream.to_bytes()) == stream


@FUZZ
@given(streams, st.integers(1 << 31, 1 << 40))
def test_writer_refuses_what_the_reader_would_refuse(stream: Bitstream, too_big: int) -> None:
    for field in ("version", "height", "width"):
        try:
            Bitstream(**{**vars(stream), field: too_big}).to_bytes()
        except ValueError:
            continue
        raise AssertionError(f"to_bytes wrote a {field} of {too_big} that from_bytes cannot read")


@FUZZ
@given(streams, st.data())
def test_every_truncation_is_refused(stream: Bitstream, data: st.DataObject) -> None:
    raw = stream.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert _parse(raw[:cut]) is None


@FUZZ
@given(streams, st.data())
def test_every_single_bit_flip_is_refused(stream: Bitstream, data: st.DataObject) -> None:
    raw = bytearray(stream.to_bytes())
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert _parse(bytes(raw)) is None  # CRC-32 detects every single-bit error


@FUZZ
@given(dims, dims, st.lists(dims, max_size=8), dims, st.binary(max_size=32))
def test_huge_claims_cost_nothing(height: int, width: int, shape: list[int], claimed: int, payload: bytes) -> None:
    """A forged header (valid CRC) claiming 2**31-sized images, latents or payloads is parsed or
    refused without allocating what it claims: the parser only slices bytes that are really there."""
    body = MAGIC + b"\x01" + b"\x01m" + _varint(1) + b"abcd" + _varint(height) + _varint(width) + b"\x01\x01"
    body += bytes([len(shape)]) + b"".join(_varint(d) for d in shape) + _varint(claimed) + payload
    tracemalloc.start()
    try:
        parsed = _parse(_recrc(body))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    if parsed is not None:
        assert (parsed.height, parsed.width) == (height, width) and len(parsed.latents[0][1]) == claimed


# ---- entropy decoding ------------------------------------------------------------------------------
SPEC = LatentSpec(name="y", channels=3, stride=4, coding="categorical", min_symbol=-8, max_symbol=7)
TABLE = np.random.default_rng(0).uniform(0.05, 1.0, size=(3, 16))


@FUZZ
@given(st.binary(max_size=256), st.integers(1, 12), st.integers(1, 12))
def test_random_payloads_decode_or_raise_entropy_error(payload: bytes, h: int, w: int) -> None:
    try:
        out = decode_latents([SPEC], [((h, w, 3), payload)], {"y": TABLE})
    except EntropyCodingError:
        return
    symbols = out["y"]
    assert symbols.shape == (1, h, w, 3)
    assert symbols.min() >= SPEC.min_symbol and symbols.max() <= SPEC.max_symbol


@FUZZ
@given(st.data())
def test_corrupted_payloads_never_escape_as_other_errors(data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    symbols = rng.integers(SPEC.min_symbol, SPEC.max_symbol + 1, size=(5, 6, 3))
    [(shape, payload)] = encode_latents([SPEC], {"y": symbols}, {"y": TABLE})
    assert np.array_equal(decode_latents([SPEC], [(shape, payload)], {"y": TABLE})["y"][0], symbols)
    mutated = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        if not mutated:
            break
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    for candidate in (bytes(mutated), bytes(mutated[:cut]), bytes(mutated) + data.draw(st.binary(max_size=16))):
        try:
            decode_latents([SPEC], [(shape, candidate)], {"y": TABLE})
        except EntropyCodingError:
            pass
