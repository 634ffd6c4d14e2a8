"""Query parameters of the hot routes (/encode, /decode, /reconstruct, /anomaly-score), parsed by hand.

Why not FastAPI `Query(...)` parameters here: FastAPI 0.16x re-inspects each parameter's annotation on
every request, and on these routes parameter and dependency solving was about a quarter of the event
loop's CPU per request (cProfile with per-thread CPU time under bench/serve.py load). The parameters
are few and flat, so they are read from the raw query string once, validated here with the same
error shape (422 `invalid_request`), and documented in OpenAPI through `PARAMETERS` (the schema the
schemathesis tests exercise).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import unquote_plus

from starlette.requests import Request

from service.inference.codec import MAX_SEARCH_ENCODES
from service.inference.errors import ServiceError
from service.inference.imaging import OutputFormat

FORMATS: tuple[str, ...] = get_args(OutputFormat)
_TRUE, _FALSE = {"true", "1", "yes", "on", "t", "y"}, {"false", "0", "no", "off", "f", "n"}


class InvalidQuery(ServiceError):
    code, status = "invalid_request", 422


@dataclass(frozen=True)
class HotQuery:
    model: str | None = None
    version: int | None = None
    format: OutputFormat | None = None
    heatmap: bool = False
    error_map: bool = False
    quality: float | None = None
    max_bytes: int | None = None  # /encode, /reconstruct: the largest stream to code to (per image)
    target_bpp: float | None = None  # the same as bits per pixel of each original image
    effort: int = 0  # /encode, /reconstruct: encoder effort (latent refinement), 0 = none

    @property
    def size_target(self) -> bool:
        return self.max_bytes is not None or self.target_bpp is not None


def parse(request: Request) -> HotQuery:
    """Validate the query string of a hot route; unknown parameters are ignored (as FastAPI does)."""
    if not request.scope.get("query_string"):  # the common case: nothing to parse
        return _NO_QUERY
    q = query_pairs(request.scope["query_string"].decode("latin-1"))
    model = q.get("model") or None
    version = _integer(q["version"], "version") if "version" in q else None
    fmt = q.get("format")
    if fmt is not None and fmt not in FORMATS:  # present but empty is invalid too, as the schema says
        raise InvalidQuery(f"format: must be one of {', '.join(FORMATS)}, not {fmt!r}")
    quality = _number(q["quality"], "quality") if "quality" in q else None
    max_bytes = _integer(q["max_bytes"], "max_bytes") if "max_bytes" in q else None
    target_bpp = _number(q["target_bpp"], "target_bpp") if "target_bpp" in q else None
    if target_bpp is not None and target_bpp <= 0:
        raise InvalidQuery(f"target_bpp: must be a number > 0, not {q['target_bpp']!r}")
    if max_bytes is not None and target_bpp is not None:
        raise InvalidQuery("give max_bytes or target_bpp, not both")
    if quality is not None and (max_bytes is not None or target_bpp is not None):
        raise InvalidQuery("give quality or a size target (max_bytes, target_bpp), not both: the search picks "
                           "the quality")
    effort = _count(q["effort"], "effort") if "effort" in q else 0
    if effort and (max_bytes is not None or target_bpp is not None):
        raise InvalidQuery("give effort or a size target (max_bytes, target_bpp), not both: effort refines the "
                           "latents for one quality; find the quality with the target (X-Quality), then encode "
                           "at it with effort")
    return HotQuery(model, version, fmt, _boolean(q, "heatmap"), _boolean(q, "error_map"), quality,  # type: ignore[arg-type]
                    max_bytes, target_bpp, effort)


_NO_QUERY = HotQuery()


def query_pairs(text: str) -> dict[str, str]:
    """What `parse_qsl(text, keep_blank_values=True)` gives, as Starlette's QueryParams reads it (a
    repeated name: the last value wins); unquoting only the parts that need it (parse_qsl was ~3% of
    the loop's CPU per request)."""
    pairs: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name, value = unquote_plus(name), unquote_plus(value)
        pairs[name] = value
    return pairs


#: What the schema promises: ASCII digits only. Python's int()/float() also take full-width and other
#: Unicode digits, underscores and surrounding spaces ("７", "1_0", " 3 "), which no other client parses.
_INTEGER = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _integer(text: str, name: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise InvalidQuery(f"{name}: must be an integer >= 1 in ASCII digits, not {text!r}")
    value = int(text)
    if value < 1:
        raise InvalidQuery(f"{name}: must be an integer >= 1, not {value}")
    return value


def _count(text: str, name: str) -> int:
    """An integer >= 0 in ASCII digits (at most 4 of them: no value of ours needs more)."""
    if not _INTEGER.fullmatch(text) or len(text) > 4:
        raise InvalidQuery(f"{name}: must be an integer from 0 to 9999 in ASCII digits, not {text[:20]!r}")
    return int(text)


def _number(text: str, name: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise InvalidQuery(f"{name}: must be a number in ASCII digits (like 3.5), not {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise InvalidQuery(f"{name}: must be a finite number, not {text!r}")
    return value


def _boolean(query: dict[str, str], name: str) -> bool:
    text = query.get(name)
    if text is None:
        return False
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise InvalidQuery(f"{name}: must be true or false, not {text!r}")


_DOCS: dict[str, dict[str, Any]] = {
    "model": {"schema": {"type": "string"}, "example": "mnist",
              "description": "Model name (GET /models); the configured default when omitted."},
    "version": {"schema": {"type": "integer", "minimum": 1}, "example": 1,
                "description": "Pin a version; the newest loaded one when omitted."},
    "format": {"schema": {"type": "string", "enum": list(FORMATS)},
               "description": "Image format of the result; else from Accept, else PNG."},
    "quality": {"schema": {"type": "number"}, "example": 3.5,
                "description": "Variable-rate models (GET /models/{name}: `rate`): from 1 (fewest bits) to the "
                               "number of trained levels, fractions allowed (resolution 0.01); the model's "
                               "default_quality when omitted. Single-rate models refuse it (422 invalid_quality). "
                               "On /decode (optional) it must match the quality the stream records."},
    "max_bytes": {"schema": {"type": "integer", "minimum": 1}, "example": 8000,
                  "description": "Compress to a size: the highest quality whose stream (header included) fits in "
                                 "this many bytes, per image, found by bisection over the quality in steps of 0.01 "
                                 f"(at most {MAX_SEARCH_ENCODES} encodes per image); the quality chosen is "
                                 "in `X-Quality` / `quality`. 422 `target_too_small` names the smallest stream "
                                 "possible when even quality 1 does not fit. A single-rate model is encoded once: "
                                 "its stream fits or the answer is that 422. Not with `quality` or `target_bpp`."},
    "target_bpp": {"schema": {"type": "number", "exclusiveMinimum": 0}, "example": 0.25,
                   "description": "As `max_bytes`, given as bits per pixel of each original image: max_bytes = "
                                  "floor(target_bpp × height × width / 8). Not with `quality` or `max_bytes`."},
    "effort": {"schema": {"type": "integer", "minimum": 0, "maximum": 9999, "default": 0}, "example": 3,
               "description": "Encoder effort, for models with the setting (GET /models/{name}: `effort`): 0 (the "
                              "default) encodes at once; 1 to `max_effort` first refine the image's latents "
                              "for `steps_per_effort` × effort gradient steps on its own rate–distortion loss: "
                              "fewer bits at the same quality, at seconds to minutes of CPU per megapixel "
                              "(like cwebp -m or avifenc --speed). Streams decode as any other. Images up to "
                              "AEC_EFFORT_MAX_PIXELS, one image per request; refinements run one at a time. "
                              "Above the model's max_effort, a model without the setting, several images or "
                              "an image over the limit: 422 invalid_effort; not an integer 0-9999, or with "
                              "a size target: 422 invalid_request."},
    "heatmap": {"schema": {"type": "boolean", "default": False},
                "description": "Include the per-pixel error as a heat-map overlay (base64 PNG)."},
    "error_map": {"schema": {"type": "boolean", "default": False},
                  "description": "Include the raw per-pixel error values (a [height][width] list)."},
}


def parameters(*names: str) -> list[dict[str, Any]]:
    """OpenAPI `parameters` entries for these query parameters."""
    return [{"name": n, "in": "query", "required": False, **_DOCS[n]} for n in names]
