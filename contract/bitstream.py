"""The self-describing bitstream: header + entropy-coded latents + CRC.

Layout (all integers are unsigned LEB128 varints unless noted)::

    magic        3 bytes  b"AEC"
    format       1 byte   1, or 2 when the quality field is present
    name         1 byte length + UTF-8 model name
    version      varint   model version
    tables       4 bytes  first bytes of the model card's tables_sha256 (same weights and tables)
    quality      varint   format 2 only (variable-rate models): quality in hundredths (quality 3.5 → 350)
    height       varint   original image height
    width        varint   original image width
    channels     1 byte   original image channels (1 grey, 3 RGB)
    n_latents    1 byte
    per latent:  rank (1 byte), dims (varints), payload length (varint), payload bytes
    crc32        4 bytes  big-endian, over everything before it

Every byte counts toward bpp, so the header is compact, but it carries enough to refuse a stream made
by another model (name, version, tables hash) and to detect corruption (CRC) instead of decoding garbage.
A stream of a single-rate model is written as format 1 (no quality field), so those streams are
unchanged byte for byte; readers accept both formats.

Portability: a stream decodes wherever its model's coding distributions are computed exactly as the
encoder computed them. Models with integer entropy parameters (`natural` from version 9, every
`codec_cc`) give the same distributions on every machine, TensorFlow build, oneDNN setting and thread
count (tested: oneDNN on/off × 1/all intra-op threads, separate processes, `bench/portable.py`); a
float-parameter model's streams (`natural` up to version 8) may fail to decode under another
configuration than the one that encoded them. See models_store/README.md, "Portable streams".
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from contract.card import LatentSpec, quality_value
from contract.entropy import ScaleFn, encode_latents

MAGIC = b"AEC"
FORMAT_VERSION = 2  # the newest format written; 1 = the same without the quality field
_FORMATS = (1, 2)
TABLES_HASH_BYTES = 4
_MAX_RANK = 8
_MAX_DIM = 1 << 31


class BitstreamError(ValueError):
    """The bytes are not a valid stream of this format (truncated, corrupt, wrong magic...)."""


@dataclass(frozen=True)
class Bitstream:
    model: str
    version: int
    tables_hash: bytes
    height: int
    width: int
    channels: int
    latents: list[tuple[tuple[int, ...], bytes]] = field(default_factory=list)
    quality_hundredths: int | None = None  # variable-rate models only

    @property
    def quality(self) -> float | None:
        return quality_value(self.quality_hundredths)

    def to_bytes(self) -> bytes:
        name = self.model.encode("utf-8")
        if not 0 < len(name) < 256:
            raise ValueError("model name must be 1-255 bytes")
        if len(self.tables_hash) != TABLES_HASH_BYTES:
            raise ValueError(f"tables_hash must be {TABLES_HASH_BYTES} bytes")
        sizes = [self.version, self.height, self.width] + [d for shape, _ in self.latents for d in shape]
        if any(size >= _MAX_DIM for size in sizes) or any(len(p) >= _MAX_DIM for _, p in self.latents):
            raise ValueError("a version, size or payload length is too large for from_bytes to accept")
        out = bytearray(MAGIC)
        out.append(1 if self.quality_hundredths is None else 2)
        out.append(len(name))
        out += name
        out += _varint(self.version)
        out += self.tables_hash
        if self.quality_hundredths is not None:
            out += _varint(self.quality_hundredths)
        out += _varint(self.height) + _varint(self.width)
        out.append(self.channels)
        out.append(len(self.latents))
        for shape, payload in self.latents:
            out.append(len(shape))
            for dim in shape:
                out += _varint(dim)
            out += _varint(len(payload))
            out += payload
        out += zlib.crc32(out).to_bytes(4, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Bitstream:
        if len(data) < len(MAGIC) + 1 + 4:
            raise BitstreamError("stream too short to hold a header")
        if data[: len(MAGIC)] != MAGIC:
            raise BitstreamError("not a bitstream of this service (bad magic bytes)")
        if (fmt := data[len(MAGIC)]) not in _FORMATS:
            raise BitstreamError(f"unsupported bitstream format version {fmt}")
        body, crc = data[:-4], int.from_bytes(data[-4:], "big")
        if zlib.crc32(body) != crc:
            raise BitstreamError("checksum mismatch: the stream is truncated or corrupted")
        reader = _Reader(body, len(MAGIC) + 1)
        name_len = reader.byte()
        try:
            model = reader.take(name_len).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BitstreamError("model name in header is not UTF-8") from exc
        version = reader.varint()
        tables_hash = reader.take(TABLES_HASH_BYTES)
        quality = reader.varint() if fmt == 2 else None
        height, width = reader.varint(), reader.varint()
        channels = reader.byte()
        latents = []
        for _ in range(reader.byte()):
            rank = reader.byte()
            if rank > _MAX_RANK:
                raise BitstreamError(f"latent rank {rank} is not plausible")
            shape = tuple(reader.varint() for _ in range(rank))
            latents.append((shape, reader.take(reader.varint())))
        if reader.pos != len(body):
            raise BitstreamError("trailing bytes after the last latent")
        return cls(model, version, tables_hash, height, width, channels, latents, quality)


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        return self.take(1)[0]

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise BitstreamError("stream ends inside its header or payload (truncated)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 35:
                raise BitstreamError("varint too long")
        if value >= _MAX_DIM:
            raise BitstreamError("a size in the header is implausibly large")
        return value


def write_stream(header: Bitstream, specs: Sequence[LatentSpec], latents: Mapping[str, np.ndarray],
                 tables: Mapping[str, np.ndarray], scale_fn: ScaleFn | None = None) -> bytes:
    """One image's latents (no batch axis) entropy-coded and written under `header` (a Bitstream whose
    own latents are ignored): the stream the service sends and whose length training reports."""
    return dataclasses.replace(header, latents=encode_latents(specs, latents, tables, scale_fn)).to_bytes()
