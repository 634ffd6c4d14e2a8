"""Whether a bitstream is the one a decode request asked for.

A stream names its model, version and (variable-rate models) quality; a request may name them too
(`?model=`, `?version=`, `?quality=`), and then they must agree, or the answer is a 422 rather than an
image from another model. This runs on the header alone, before the stream is checked against the
model it names (`codec.check`) and before any decoding work.
"""

from __future__ import annotations

from contract.bitstream import Bitstream
from contract.card import quality_hundredths
from service.inference.errors import BitstreamModelMismatch


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
