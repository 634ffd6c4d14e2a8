"""Typed errors mapped from the service's `{"error": {"code", "message"}}` responses.

Catch `ServiceError` for everything, or a subclass for one kind of failure; `code` is the service's
stable snake_case code, `status` the HTTP status (0 when the service could not be reached at all).
"""

from __future__ import annotations

import httpx


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


class ConnectionFailed(ServiceError):
    """No HTTP answer: refused, reset, DNS, or the client-side timeout."""


class InvalidInput(ServiceError):
    """The request itself is wrong (empty body, bad multipart, bad parameter)."""


class InvalidImage(InvalidInput):
    """Not an image in an accepted format, a truncated one, or a size the model refuses."""


class InvalidBitstream(InvalidInput):
    """Not a bitstream of this service, or a corrupted one."""


class BitstreamMismatch(InvalidInput):
    """A valid bitstream made by another model, version or build than the one asked for."""


class ModelRequired(InvalidInput):
    """Several models are served and no default is configured: pass `model=`."""


class TargetTooSmall(InvalidInput):
    """`max_bytes=` / `target_bpp=` below the smallest stream the model makes of the image (the message
    names that size)."""


class ModelNotFound(ServiceError):
    """No such model (or version) is loaded."""


class VersionNotFound(ModelNotFound):
    pass


class PayloadTooLarge(ServiceError):
    """Over the byte, pixel or file-count limit of the service."""


class AnomalyNotCalibrated(ServiceError):
    """The model has no calibrated threshold, so it gives no anomaly verdict."""


class Unauthorized(ServiceError):
    """A missing or wrong API key."""


class Overloaded(ServiceError):
    """The service's batch queue is full; retry after `retry_after` seconds."""

    retry_after: float = 1.0


class ServiceUnavailable(ServiceError):
    """Not ready: models still loading, or none could be loaded."""


class Timeout(ServiceError):
    """The service's inference budget ran out (HTTP 504)."""


class InternalError(ServiceError):
    """A bug in the service (HTTP 500); quote `request_id` when reporting it."""


_BY_CODE: dict[str, type[ServiceError]] = {
    "invalid_request": InvalidInput, "invalid_multipart": InvalidInput, "empty_body": InvalidInput,
    "invalid_content_length": InvalidInput, "client_disconnected": InvalidInput, "bad_request": InvalidInput,
    "unsupported_image": InvalidImage, "corrupt_image": InvalidImage, "image_size_rejected": InvalidImage,
    "unsupported_media_type": InvalidImage,
    "corrupt_bitstream": InvalidBitstream, "bitstream_model_mismatch": BitstreamMismatch,
    "model_required": ModelRequired, "target_too_small": TargetTooSmall, "model_not_found": ModelNotFound, "version_not_found": VersionNotFound,
    "not_found": ModelNotFound,
    "payload_too_large": PayloadTooLarge, "too_many_files": PayloadTooLarge, "too_many_pixels": PayloadTooLarge,
    "anomaly_not_calibrated": AnomalyNotCalibrated, "unauthorized": Unauthorized,
    "overloaded": Overloaded, "not_ready": ServiceUnavailable, "no_models_loaded": ServiceUnavailable,
    "timeout": Timeout, "internal_error": InternalError,
}
_BY_STATUS: dict[int, type[ServiceError]] = {
    400: InvalidInput, 401: Unauthorized, 403: Unauthorized, 404: ModelNotFound, 409: AnomalyNotCalibrated,
    413: PayloadTooLarge, 415: InvalidImage, 422: InvalidInput, 500: InternalError, 503: ServiceUnavailable,
    504: Timeout,
}


def error_from_response(response: httpx.Response) -> ServiceError:
    """The typed error for a non-2xx response (any body: JSON error shape, or not)."""
    code, message = "", ""
    try:
        body = response.json()
        code, message = str(body["error"]["code"]), str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    cls = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code, ServiceError)
    error = cls(response.status_code, code or f"http_{response.status_code}", message,
                response.headers.get("x-request-id"))
    if isinstance(error, Overloaded):
        try:
            error.retry_after = float(response.headers.get("retry-after", "1"))
        except ValueError:
            error.retry_after = 1.0
    return error


def connection_failed(exc: httpx.TransportError, base_url: str) -> ConnectionFailed:
    return ConnectionFailed(0, "connection_failed", f"cannot reach {base_url}: {type(exc).__name__}: {exc}")
