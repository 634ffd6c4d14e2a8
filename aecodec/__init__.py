"""Python client for the aecodec service (httpx): `Client` (blocking) and `AsyncClient` (asyncio).

    from aecodec import Client
    with Client("http://127.0.0.1:8000", api_key=None) as client:
        encoded = client.encode("photo.png")          # EncodedImage: .data, .bpp, .model, ...
        image = client.decode(encoded)                # PIL.Image at the original size
        result = client.reconstruct("photo.png")      # Reconstruction: .image, .psnr, .ms_ssim, .mse
        small = client.encode("photo.png", model="natural", max_bytes=8000)  # the best quality that fits
        verdict = client.anomaly_score("photo.png", heatmap=True)

Images may be paths, bytes, PIL images, numpy arrays or open files. The command line is
`python -m aecodec` (installed as `aecodec`). Imports no TensorFlow and no service code.
"""

from aecodec.async_client import AsyncClient
from aecodec.errors import (
    AnomalyNotCalibrated,
    BitstreamMismatch,
    ConnectionFailed,
    InternalError,
    InvalidBitstream,
    InvalidImage,
    InvalidInput,
    ModelNotFound,
    ModelRequired,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    TargetTooSmall,
    Timeout,
    Unauthorized,
    VersionNotFound,
)
from aecodec.results import AnomalyResult, EncodedImage, ModelInfo, Reconstruction, VersionInfo
from aecodec.sync import Client

__all__ = [
    "AnomalyNotCalibrated", "AnomalyResult", "AsyncClient", "BitstreamMismatch", "Client", "ConnectionFailed",
    "EncodedImage", "InternalError", "InvalidBitstream", "InvalidImage", "InvalidInput", "ModelInfo",
    "ModelNotFound", "ModelRequired", "Overloaded", "PayloadTooLarge", "Reconstruction", "ServiceError",
    "ServiceUnavailable", "TargetTooSmall", "Timeout", "Unauthorized", "VersionInfo", "VersionNotFound",
]
