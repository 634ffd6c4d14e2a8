"""The contract between training and serving: card validation, bitstream framing, entropy coding."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from contract.bitstream import Bitstream, BitstreamError
from contract.card import InputSpec, LatentSpec, ModelCard, Provenance, RateSpec
from contract.entropy import EntropyCodingError, decode_latents, encode_latents


def _card(**overrides) -> ModelCard:
    fields = {
        "name": "mnist", "version": 3, "architecture": "keras_cae",
        "input": InputSpec(height=28, width=28, channels=1),
        "latents": [LatentSpec(name="y", channels=4, shape=[4], coding="categorical", min_symbol=0, max_symbol=255)],
        "tables_sha256": "ab" * 32,
        "training": Provenance(dataset="synthetic", command="python -m training train ..."),
        "metrics": {"mse": 0.01},
    }
    return ModelCard(**(fields | overrides))


def test_card_round_trips_through_model_json(tmp_path):
    card = _card()
    card.write(tmp_path)
    assert ModelCard.read(tmp_path) == card


@pytest.mark.parametrize("bad", [
    {"name": "../etc"},  # path tricks never become model names
    {"version": 0},
    {"input": {"channels": 1}},  # fixed size without height/width
    {"architecture": "resnet"},
])
def test_card_rejects_invalid_fields(bad):
    with pytest.raises(ValidationError):
        _card(**bad)


def test_gaussian_latent_needs_scales():
    with pytest.raises(ValidationError, match="scale_table"):
        LatentSpec(name="y", channels=2, coding="gaussian", min_symbol=-5, max_symbol=5)


def _stream(**overrides) -> Bitstream:
    fields = {"model": "natural", "version": 2, "tables_hash": b"\x01\x02\x03\x04", "height": 500, "width": 17,
              "channels": 3, "latents": [((2, 3, 4), b"\x00payload"), ((1, 1, 8), b"")]}
    return Bitstream(**(fields | overrides))


def test_bitstream_round_trips_and_is_compact():
    stream = _stream()
    data = stream.to_bytes()
    assert Bitstream.from_bytes(data) == stream
    payload = sum(len(p) for _, p in stream.latents)
    assert len(data) - payload < 40  # header + CRC stay small: they count toward bpp


def test_quality_field_only_in_variable_rate_streams():
    plain, rated = _stream(), _stream(quality_hundredths=350)
    assert plain.to_bytes()[3] == 1 and rated.to_bytes()[3] == 2  # single-rate streams keep format 1 bytes
    assert len(rated.to_bytes()) == len(plain.to_bytes()) + 2  # 350 is a two-byte varint
    assert Bitstream.from_bytes(rated.to_bytes()) == rated and Bitstream.from_bytes(rated.to_bytes()).quality == 3.5
    assert Bitstream.from_bytes(plain.to_bytes()).quality is None
    future = bytearray(rated.to_bytes())
    future[3] = 3
    with pytest.raises(BitstreamError, match="format version 3"):
        Bitstream.from_bytes(bytes(future))


def test_rate_spec_validates_its_range():
    rate = RateSpec(lmbdas=[0.001, 0.004, 0.016], default_quality=2.5)
    assert rate.max_quality == 3.0
    assert (rate.hundredths(None), rate.hundredths(1.234), rate.hundredths(3)) == (250, 123, 300)
    for bad in (0.99, 3.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="quality must lie in"):
            rate.hundredths(bad)
    assert (rate.lmbda_at(1), rate.lmbda_at(2.5), rate.lmbda_at(3)) == pytest.approx((0.001, 0.008, 0.016))
    for bad in ({"lmbdas": [0.01], "default_quality": 1}, {"lmbdas": [0.01, 0.001], "default_quality": 1},
                {"lmbdas": [0.001, 0.01], "default_quality": 2.5}):
        with pytest.raises(ValidationError):
            RateSpec(**bad)


@pytest.mark.parametrize("stream", [_stream(), _stream(quality_hundredths=350)], ids=["format1", "format2"])
def test_bitstream_detects_every_single_bit_flip(stream):
    data = stream.to_bytes()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            Bitstream.from_bytes(bytes(flipped))


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 10, -5, -1])
def test_truncated_bitstream_is_refused(cut):
    data = _stream().to_bytes()
    with pytest.raises(BitstreamError):
        Bitstream.from_bytes(data[:cut])


def test_entropy_coding_round_trips_and_compresses():
    rng = np.random.default_rng(0)
    specs = [
        LatentSpec(name="z", channels=3, stride=64, coding="categorical", min_symbol=-4, max_symbol=4),
        LatentSpec(name="y", channels=5, stride=16, coding="gaussian", min_symbol=-64, max_symbol=64,
                   scale_table=[0.2, 1.0, 4.0], scale_source="hyper_decode"),
    ]
    peaked = np.full((3, 9), 0.01)
    peaked[:, 4] = 1.0  # symbol 0 is very likely
    z = np.zeros((4, 4, 3), dtype=np.int32)
    y = np.round(rng.normal(0, 0.2, (16, 16, 5))).astype(np.int32)

    def scales(name, coded):
        assert name == "y" and set(coded) == {"z"}  # y is conditioned on the decoded z only
        return np.zeros((1, 16, 16, 5), dtype=np.int32)

    payloads = encode_latents(specs, {"z": z, "y": y}, {"z": peaked}, scales)
    decoded = decode_latents(specs, payloads, {"z": peaked}, scales)
    np.testing.assert_array_equal(decoded["z"][0], z)
    np.testing.assert_array_equal(decoded["y"][0], y)
    total_bits = 8 * sum(len(p) for _, p in payloads)
    assert total_bits < 0.5 * (z.size + y.size)  # far below 1 bit per symbol for such peaked data


def test_out_of_range_symbols_are_refused():
    spec = LatentSpec(name="y", channels=2, shape=[2], coding="categorical", min_symbol=0, max_symbol=3)
    with pytest.raises(EntropyCodingError, match="outside"):
        encode_latents([spec], {"y": np.array([0, 9])}, {"y": np.ones((2, 4))})
