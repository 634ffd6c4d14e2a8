"""Response schemas (pydantic). "models" means ML models in this project, so API shapes live here.

Binary results (bitstreams, images) are base64 strings only in the JSON variants; the default
responses are the raw bytes with figures in X- headers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.card import EffortSpec, InputSpec, ModelCard, RateSpec


class ErrorBody(BaseModel):
    code: str = Field(description="Stable snake_case error code.", examples=["model_not_found"])
    message: str = Field(description="What went wrong, for humans.")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": {"code": "model_not_found", "message": "model 'x' is not loaded"}}]}
    )
    error: ErrorBody


class _ImageFacts(BaseModel):
    model: str
    version: int
    height: int = Field(description="Original image height (what decode returns).")
    width: int = Field(description="Original image width.")
    channels: Literal[1, 3] = Field(description="Original image channels: 1 grey, 3 colour.")
    size_policy: Literal["pad", "resize", "reject"] = Field(description="The model's size policy.")
    size_action: Literal["none", "padded", "resized"] = Field(description="What the policy did to this image.")
    filename: str | None = Field(None, description="Multipart file name, when there was one.")


class _Quality(BaseModel):
    quality: float | None = Field(None, description="Variable-rate models: the quality coded at (else null).")


class _Effort(BaseModel):
    effort: int = Field(0, description="The encoder effort used (`?effort=`; 0: the plain encoder).")


class EncodeResult(_ImageFacts, _Quality, _Effort):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "mnist", "version": 1, "height": 28, "width": 28, "channels": 1,
                    "size_policy": "resize", "size_action": "none", "filename": "digit-7.png",
                    "bitstream": "QUVDAQVtbmlzdAF8fw4iHBwBAQMHBwI0FaFH2w0clJ+R7/auJcpybSOINb4i5wgvSmeHQXHZ...",
                    "bytes": 80, "bpp": 0.8163, "quality": None,
                }
            ]
        }
    )
    bitstream: str = Field(description="The bitstream, base64 (standard alphabet, padded).")
    bytes: int = Field(description="Length of the bitstream in bytes, header included.")
    bpp: float = Field(description="bytes * 8 / (height * width) of the original image.")
    search_encodes: int | None = Field(
        None, description="With `?max_bytes=`/`?target_bpp=`: the encodes the search ran (else null).")


class DecodeResult(_Quality):
    model: str
    version: int
    height: int
    width: int
    channels: Literal[1, 3]
    media_type: str = Field(examples=["image/png"])
    image: str = Field(description="The decoded image file, base64.")
    filename: str | None = None


class ReconstructResult(_ImageFacts, _Quality, _Effort):
    media_type: str = Field(examples=["image/png"])
    image: str = Field(description="The reconstruction at the original size and channels, base64.")
    mse: float = Field(description="MSE vs the input as the model saw it, pixels in [0, 1].")
    psnr: float | None = Field(description="PSNR in dB (null when the reconstruction is exact).")
    ms_ssim: float | None = Field(
        None, description="MS-SSIM in [0, 1] (tf.image.ssim_multiscale: 5 scales, 11-px Gaussian window, "
        "averaged over channels) vs the input as the model saw it; null for an image under 161 px on a side "
        "or over AEC_MS_SSIM_MAX_PIXELS. In dB: -10·log10(1 - ms_ssim).")
    bytes: int | None = Field(
        None, description="With `?max_bytes=`/`?target_bpp=`: the length of the stream the reconstruction "
        "decodes from (else null).")
    bpp: float | None = Field(None, description="With a size target: bytes * 8 / (height * width) (else null).")
    search_encodes: int | None = Field(
        None, description="With `?max_bytes=`/`?target_bpp=`: the encodes the search ran (else null).")


class AnomalyScore(_ImageFacts):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "score": 0.00129, "threshold": 0.0111, "is_anomaly": False, "normalized_score": 0.0118,
                    "score_kind": "mse",
                    "model": "mnist", "version": 1, "height": 28, "width": 28, "channels": 1,
                    "size_policy": "resize", "size_action": "none", "filename": None, "heatmap": None,
                    "error_map": None,
                }
            ]
        }
    )
    score: float
    threshold: float = Field(description="Calibrated at export on held-out normal data (see the model card).")
    is_anomaly: bool = Field(description="score > threshold")
    normalized_score: float = Field(
        description="The score mapped into [0, 1] with the threshold at 0.5, scaled by the spread of "
        "held-out normal scores (comparable across models and score kinds)."
    )
    score_kind: str = Field(description="What the score measures (model card anomaly.score).")
    heatmap: str | None = Field(
        None, description="PNG, base64 (?heatmap=true): the per-pixel error as a heat map laid over a grey copy "
        "of the image, at the original size; red → yellow → white = larger error, scaled to this image's largest.")
    error_map: list[list[float]] | None = Field(
        None, description="The raw per-pixel error values [height][width] at the original size (?error_map=true), "
        "in the units of the model's reconstruction error (squared error of pixels in [0, 1], or 1 - local SSIM).")


class VersionStatus(BaseModel):
    version: int
    state: Literal["available", "failed"]
    error: str | None = Field(None, description="Why the version failed to load.")
    architecture: str | None = None
    input: InputSpec | None = None
    anomaly_threshold: float | None = None
    rate: RateSpec | None = Field(None, description="Variable-rate models: the range of `?quality=`.")
    effort: EffortSpec | None = Field(None, description="Models with an encoder effort setting: the range of `?effort=`.")
    normal_classes: list[int] | None = Field(None, description="Labels the model was trained on as normal.")
    metrics: dict[str, float] = Field(default_factory=dict)
    since: str = Field(description="When it was loaded or failed (UTC, ISO 8601).")


class ModelSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "mnist", "is_default": True, "default_version": 1,
                    "versions": [
                        {"version": 2, "state": "failed", "error": "SavedModel cannot be loaded: ...",
                         "since": "2026-01-01T00:01:00Z"},
                        {"version": 1, "state": "available", "architecture": "conv_ae", "since": "2026-01-01T00:00:00Z"},
                    ],
                }
            ]
        }
    )
    name: str
    is_default: bool
    default_version: int | None = Field(description="Newest loaded version: what requests without ?version= get.")
    versions: list[VersionStatus]


class ModelList(BaseModel):
    default_model: str | None = Field(description="What a request without ?model= gets (null: none loaded).")
    default_source: Literal["setting", "store", "first_by_name"] | None = Field(
        None, description="Why it is the default: AEC_DEFAULT_MODEL (`setting`), the store's DEFAULT file "
        "(`store`: models_store/DEFAULT names it), or, with neither, the first loaded model by name "
        "(`first_by_name`), so adding a model to a store never breaks clients that name none.")
    models: list[ModelSummary]


class VersionDetail(VersionStatus):
    card: ModelCard | None = Field(None, description="The full model card (model.json) of a loaded version.")


class ModelDetail(ModelSummary):
    versions: list[VersionDetail]  # type: ignore[assignment]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    models: int
    versions: int
