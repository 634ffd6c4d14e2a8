"""Errors a client can cause, each with a stable snake_case code and the HTTP status it maps to.

Inference code raises these with a message that names the problem; `service.app.errors` turns them into
`{"error": {"code", "message"}}` responses. Anything else escaping a route is a bug (500).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `code` is part of the API contract; `status` is the HTTP status to answer with."""

    code: str = "bad_request"
    status: int = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After on 503
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class EmptyBody(ServiceError):
    code, status = "empty_body", 400


class PayloadTooLarge(ServiceError):
    code, status = "payload_too_large", 413


class TooManyFiles(ServiceError):
    code, status = "too_many_files", 413


class TooManyPixels(ServiceError):
    code, status = "too_many_pixels", 413


class InvalidMultipart(ServiceError):
    code, status = "invalid_multipart", 400


class UnsupportedImage(ServiceError):
    """Not an image, or a format we do not accept."""

    code, status = "unsupported_image", 415


class CorruptImage(ServiceError):
    """Recognised format, but the pixel data is truncated or broken."""

    code, status = "corrupt_image", 400


class NonFinitePixels(ServiceError):
    """A float image (TIFF) holding NaN or infinite values: no model input, no PSNR, no entropy code."""

    code, status = "non_finite_pixels", 400


class ImageMetadataTooLarge(ServiceError):
    """A PNG text or ICC chunk that inflates past Pillow's bomb limit: an image, but refused for it."""

    code, status = "image_metadata_too_large", 413


class BodyTimeout(ServiceError):
    """The request body did not arrive within AEC_BODY_TIMEOUT_S (a slow or stalled client)."""

    code, status = "body_timeout", 408


class ImageSizeRejected(ServiceError):
    """A fixed-size model whose size policy is `reject` (or `pad` with a too-large image)."""

    code, status = "image_size_rejected", 422


class ModelNotFound(ServiceError):
    code, status = "model_not_found", 404


class VersionNotFound(ServiceError):
    code, status = "version_not_found", 404


class ModelRequired(ServiceError):
    """Several models are loaded, none is configured as default and the request named none."""

    code, status = "model_required", 400


class NoModelsLoaded(ServiceError):
    code, status = "no_models_loaded", 503


class CorruptBitstream(ServiceError):
    code, status = "corrupt_bitstream", 400


class BitstreamModelMismatch(ServiceError):
    """A valid stream, but made by another model, version or build (tables hash) than requested."""

    code, status = "bitstream_model_mismatch", 422


class InvalidQuality(ServiceError):
    """`quality` outside the model's range, or given to a single-rate model (which has no quality knob)."""

    code, status = "invalid_quality", 422


class InvalidEffort(ServiceError):
    """`effort` outside the model's range, given to a model whose encoder cannot refine, with a size
    target, with several images, or on an image over AEC_EFFORT_MAX_PIXELS (refinement costs CPU in
    proportion to pixels)."""

    code, status = "invalid_effort", 422


class TargetTooSmall(ServiceError):
    """`?max_bytes=` / `?target_bpp=` below the smallest stream the model makes of the image (its lowest
    quality, or its only rate): the message names that size."""

    code, status = "target_too_small", 422


class AnomalyNotCalibrated(ServiceError):
    code, status = "anomaly_not_calibrated", 409


class Unauthorized(ServiceError):
    code, status = "unauthorized", 401


class Overloaded(ServiceError):
    """The batch queue is full: refuse now (the client retries later) rather than queue without bound."""

    code, status = "overloaded", 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})


class InferenceTimeout(ServiceError):
    code, status = "timeout", 504
