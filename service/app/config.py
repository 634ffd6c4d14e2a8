"""Service settings: the one place that reads the environment (prefix `AEC_`), validated at startup.

Unsafe or nonsensical values fail fast here instead of surfacing as odd behaviour under load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.inference.tiling import Tiling


class Settings(BaseSettings):
    """Everything an operator can tune; each field maps to `AEC_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="AEC_", env_file=".env", env_ignore_empty=True, extra="ignore", protected_namespaces=()
    )

    models_dir: Path = Field(Path("models_store"), description="Root of <name>/<int version>/ model dirs.")
    default_model: str | None = Field(None, description="Model served when a request names none.")
    max_upload_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Request body limit, checked while reading. The default holds the "
        "largest image AEC_MAX_PIXELS allows as uncompressed 8-bit RGB (4096*4096*3 = 48 MiB), so a 12 MP photo "
        "fits in any 8-bit format."
    )
    max_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest width*height accepted, checked from the image header before "
        "decoding (a 12 MP phone photo fits; bigger images of any-size models run in tiles)."
    )
    max_request_pixels: int = Field(
        4096 * 4096, gt=0, description="Most decoded pixels one request may ask for: width*height summed over its "
        "images (or over the images its bitstreams decode to), from the headers, before decoding (413). Without "
        "it one 1 MB multipart of 64 zlib-bomb PNGs decodes a gigapixel."
    )
    max_pixels_in_flight: int = Field(
        2 * 4096 * 4096, gt=0, description="Most decoded pixels all requests together may hold at once. A request "
        "that would pass it waits for others to finish (up to AEC_REQUEST_TIMEOUT_S, then 503 overloaded), so "
        "memory for pixels is bounded by this times the bytes per pixel (docs/operators.md)."
    )
    max_error_map_pixels: int = Field(
        256 * 256, ge=0, description="Largest image whose ?error_map=true answer (one JSON number per pixel, "
        "~10 bytes each) is built; bigger ones are refused from the header (413) before any work."
    )
    ms_ssim_max_pixels: int = Field(
        2**21, ge=0, description="Largest image (width*height at the model's size) whose /reconstruct answer "
        "carries MS-SSIM (X-MS-SSIM, ms_ssim), 0 = never: about 1-1.3 CPU-seconds and ~160 MiB per megapixel "
        "(docs/operators.md); bigger images get null and no header, as do images under 161 px on a side (the "
        "measure's minimum)."
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Most bytes of request line + headers; past it 431 and the connection is "
        "closed, before the server buffers more."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="How long a connection may take from its first byte (or from opening) to the end "
        "of a request's headers; past it 408 and close (a client trickling headers holds nothing for long)."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="How long a request body may take to arrive in full; past it 408 body_timeout."
    )
    max_connections: int = Field(
        512, ge=1, description="Most open connections; one more is answered 503 and closed at once."
    )
    tile_size: int = Field(
        1024, ge=64, description="Any-size models (the codec) run images bigger than one tile (plus halos) "
        "tile by tile: peak memory follows the tile, not the image. One bitstream either way, no seams."
    )
    tile_halo: int | None = Field(
        None, ge=0, description="Context read around each tile; unset: what each model's card names (its "
        "receptive field), 192 px for cards that name none. Less than the model needs shows tile seams.")
    max_files: int = Field(64, ge=1, description="Most images (or streams) in one multipart request.")
    max_batch_size: int = Field(16, ge=1, description="Most images per TensorFlow call of the micro-batcher.")
    max_wait_ms: float = Field(
        1.0, ge=0, description="How long the first request of a batch waits for company (under load batches "
        "fill while the previous one computes, so a long wait only adds latency; bench/serve.py)."
    )
    max_queue: int = Field(
        256, ge=1, description="Most items waiting per model batcher; beyond it requests get 503 + Retry-After."
    )
    effort_max_pixels: int = Field(
        2**21, ge=0, description="Largest image (width*height at the model's size) that `?effort=` above 0 may "
        "refine; bigger ones get 422 invalid_effort (0 = effort off). Refinement costs CPU in proportion to "
        "pixels × steps (docs/operators.md); it runs one request at a time, beside the other requests.")
    effort_timeout_s: float = Field(
        600.0, ge=0, description="Inference budget of a request with `?effort=` above 0 (refinement takes "
        "seconds to minutes per megapixel); over it answers 504. 0 = off.")
    request_timeout_s: float = Field(
        30.0, ge=0, description="Inference budget per request (queue + compute); over it answers 504. 0 = off."
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish (0 = no limit)."
    )
    batches_in_flight: int = Field(
        2, ge=1, description="Batches per model and signature computed at once (1 keeps a GPU strictly serial)."
    )
    tf_intra_op_threads: int = Field(
        0, ge=0, description="Threads one TensorFlow op may use; 0 = every core when the store holds a model "
        "for images of any size (photos), else the cores split among the batches in flight "
        "(cpu_count // AEC_BATCHES_IN_FLIGHT, at least 1)."
    )
    inference_threads: int = Field(2, ge=1, description="Threads running TensorFlow calls off the event loop.")
    reload_interval_s: float = Field(10.0, ge=0, description="Poll models_dir for new/removed versions; 0 = off.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys; when set, POST and /models need X-API-Key."
    )
    probes_require_key: bool = Field(False, description="Whether /healthz and /readyz also need the API key.")
    metrics_require_key: bool = Field(False, description="Whether /metrics also needs the API key.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed to call from browsers; empty = no CORS."
    )
    otel_telemetry: bool = Field(
        False, description="FastAPI's built-in OpenTelemetry spans/metrics (needs a configured OTel provider)."
    )
    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object, info: ValidationInfo) -> object:
        """Comma-separated text to a list. `AEC_API_KEYS=" , "` names no key: refusing it at start beats
        silently serving without auth."""
        if isinstance(value, str):
            items = [key.strip() for key in value.split(",") if key.strip()]
            if info.field_name == "api_keys" and value and not items:
                raise ValueError("AEC_API_KEYS is set but holds no key (only commas and spaces); unset it to "
                                 "serve without auth, or list the keys")
            return items
        return value

    @model_validator(mode="after")
    def _budgets_fit(self) -> Settings:
        """A request within the per-request budget must be able to enter the in-flight one, or it waits
        for ever."""
        if self.max_pixels_in_flight < self.max_request_pixels:
            raise ValueError(f"AEC_MAX_PIXELS_IN_FLIGHT ({self.max_pixels_in_flight}) must be at least "
                             f"AEC_MAX_REQUEST_PIXELS ({self.max_request_pixels})")
        return self

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        """An origin is scheme://host[:port] with no path (a trailing slash never matches the browser's)."""
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"CORS origin {origin!r} must look like https://host[:port] (no path), or be *")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("default_model")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def effort_on(self) -> bool:
        """Whether `?effort=` above 0 is served at all (`/models` then shows each codec's effort range)."""
        return self.effort_max_pixels > 0

    @property
    def tiling(self) -> Tiling:
        return Tiling(self.tile_size, self.tile_halo)

    def intra_op_threads(self, any_size_models: bool = False) -> int:
        """The TF intra-op thread count to use: the setting; else every core when the store holds a model
        for images of any size (`any_size_models`, registry.serves_any_size), so that one photo's
        convolutions use all of them; else the cores split among concurrent batches, which suits small
        images, where the event loop is the bottleneck and every core an op takes is one it loses
        (measured both ways: docs/operators.md, AEC_TF_INTRA_OP_THREADS)."""
        if self.tf_intra_op_threads:
            return self.tf_intra_op_threads
        if any_size_models:
            return max(1, os.cpu_count() or 1)
        return max(1, (os.cpu_count() or 1) // self.batches_in_flight)
