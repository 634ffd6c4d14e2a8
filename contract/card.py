"""`model.json`: the model card that training writes next to each SavedModel and the service validates.

Everything the service needs to serve a model without its Python code lives either in the SavedModel
signatures or here: input policy, how latents are entropy-coded, the calibrated anomaly threshold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_FILENAME = "model.json"
CARD_SCHEMA_VERSION = 1

Architecture = Literal["single_layer_cae", "conv_ae", "dense_ae", "keras_cae", "codec", "codec_cc"]
ScoreKind = Literal["mse", "ssim", "bits", "combined", "complexity"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What images the model takes. Fixed-size models state how other sizes are handled."""

    height: int | None = Field(None, description="Fixed input height, or None when any size is accepted.")
    width: int | None = Field(None, description="Fixed input width, or None when any size is accepted.")
    channels: Literal[1, 3]
    any_size: bool = Field(False, description="Fully convolutional: pads to size_multiple, crops back.")
    size_multiple: int = Field(1, ge=1, description="Spatial dims are padded up to a multiple of this.")
    size_policy: Literal["resize", "reject", "pad"] = Field(
        "resize", description="Fixed-size models: resize other sizes, or reject them with 422."
    )
    tile_halo: int | None = Field(
        None, ge=0, description="Any-size models: context in pixels a tile reads on each side so that tiled "
        "coding gives what the whole image would (the model's receptive field); None: the server's setting.")

    @model_validator(mode="after")
    def _fixed_or_any(self) -> InputSpec:
        if not self.any_size and (self.height is None or self.width is None):
            raise ValueError("a fixed-size model needs height and width")
        if self.any_size and self.size_policy != "pad":
            raise ValueError("an any-size model pads (size_policy='pad')")
        return self


class LatentSpec(_Strict):
    """One integer latent tensor returned by the `encode` signature, and how it is entropy-coded.

    `categorical`: one probability table per channel (last axis), read from the `entropy_tables`
    signature under `name`. `gaussian`: zero-mean quantised Gaussian whose scale per element is
    `scale_table[i]`, with `i` from the `scale_source` signature applied to the latents coded before.
    """

    name: str
    channels: int = Field(ge=1)
    stride: int | None = Field(None, description="Spatial downsampling of a conv latent; None for flat.")
    stride_x: int | None = Field(None, description="Horizontal downsampling when it differs from `stride` "
                                 "(a checkerboard half of a latent grid, packed to half its width); None: `stride`.")
    shape: list[int] | None = Field(None, description="Per-image shape when it does not depend on size.")
    coding: Literal["categorical", "gaussian"]
    min_symbol: int
    max_symbol: int
    scale_table: list[float] | None = None
    scale_source: str | None = Field(None, description="Signature computing scale indices, e.g. hyper_decode.")

    @model_validator(mode="after")
    def _coding_fields(self) -> LatentSpec:
        if self.max_symbol <= self.min_symbol:
            raise ValueError("max_symbol must exceed min_symbol")
        if self.coding == "gaussian" and (not self.scale_table or not self.scale_source):
            raise ValueError("gaussian latents need scale_table and scale_source")
        return self


class RateSpec(_Strict):
    """A variable-rate model's quality knob: encode/decode/reconstruct take `quality` [B] in
    [1, len(lmbdas)]; quality l is the l-th trained level (λ = lmbdas[l − 1]), values between two levels
    interpolate them. The service snaps quality to hundredths and the bitstream records it, so
    decode uses exactly what encode used."""

    lmbdas: list[float] = Field(min_length=2, description="λ of the trained levels, quality 1, 2, ... (ascending).")
    default_quality: float = Field(description="Used when a request names no quality.")

    @property
    def min_quality(self) -> float:
        return 1.0

    @property
    def max_quality(self) -> float:
        return float(len(self.lmbdas))

    def hundredths(self, quality: float | None) -> int:
        """`quality` (the default when None) snapped to 0.01, as a stream records it; ValueError when it
        is not a number within [min_quality, max_quality]."""
        value = self.default_quality if quality is None else quality
        if not (math.isfinite(value) and self.min_quality <= value <= self.max_quality):
            raise ValueError(f"quality must lie in [{self.min_quality:g}, {self.max_quality:g}], not {value:g}")
        return quality_hundredths(value)

    def lmbda_at(self, quality: float) -> float:
        """The λ a quality stands for: log λ interpolated between the two nearest levels, as the gains are."""
        j = min(int(quality) - 1, len(self.lmbdas) - 2)
        t = quality - 1 - j
        return math.exp((1 - t) * math.log(self.lmbdas[j]) + t * math.log(self.lmbdas[j + 1]))

    @model_validator(mode="after")
    def _ordered(self) -> RateSpec:
        if any(b <= a for a, b in zip(self.lmbdas, self.lmbdas[1:])):
            raise ValueError("lmbdas must be strictly ascending")
        if not self.min_quality <= self.default_quality <= self.max_quality:
            raise ValueError(f"default_quality must lie in [1, {len(self.lmbdas)}]")
        return self


class EffortSpec(_Strict):
    """Encoder effort: the `encode_refined` signature takes `effort` [B] (int32, 0 to `max_effort`) besides
    encode's inputs and refines each image's latents for `steps_per_effort` × effort gradient steps on
    its own rate–distortion loss before coding. Effort 0 codes what `encode` codes; decoding is the
    same for every effort (an encoder-only choice, like `cwebp -m` or `avifenc --speed`)."""

    max_effort: int = Field(ge=1)
    steps_per_effort: int = Field(ge=1)
    signature: str = "encode_refined"


QUALITY_SCALE = 100  # quality resolution 0.01: the bitstream stores round(quality * QUALITY_SCALE)


def quality_hundredths(quality: float) -> int:
    return round(quality * QUALITY_SCALE)


def quality_value(hundredths: int | None) -> float | None:
    """The quality a stream records (None: a single-rate model's stream)."""
    return None if hundredths is None else hundredths / QUALITY_SCALE


class ScoreStats(_Strict):
    """Summary of anomaly scores on held-out normal images (for the threshold and normalisation)."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float] = Field(description="e.g. {'0.5': ..., '0.99': ...}")


class ComplexityFit(_Strict):
    """The `complexity` score's line (training/complexity.py): score = log(mse) - (intercept + slope ·
    log(png_bpp)), fitted by least squares on held-out normal images. The exported `anomaly_score`
    signature computes the score itself (PNG size by TensorFlow's encoder, the line in its variables);
    this is the same line for people and checks."""

    error: Literal["mse"] = Field("mse", description="The reconstruction error whose log is corrected.")
    complexity: Literal["png_bpp"] = Field(
        "png_bpp", description="Bits per pixel of the model-size 8-bit image as a lossless PNG (tf.io.encode_png).")
    intercept: float
    slope: float
    n: int = Field(ge=3, description="Held-out normal images the line was fitted on.")
    r2: float = Field(description="Share of the variance of log(mse) on those images the line explains.")
    residual_std: float = Field(ge=0, description="Spread of the score on those images.")
    fitted_on: str = Field(description="Which held-out normal images the line comes from.")


class AnomalySpec(_Strict):
    score: ScoreKind = "mse"
    threshold: float
    target_fpr: float = Field(0.01, gt=0, lt=1)
    calibration: ScoreStats
    calibrated_on: str = Field(description="Which held-out normal data set the threshold comes from.")
    threshold_method: Literal["empirical", "yeo-johnson"] = Field(
        "empirical", description="How the (1 - target_fpr) quantile was estimated from the held-out scores.")
    normal_classes: list[int] | None = Field(None, description="Labels trained on as normal, if any.")
    complexity: ComplexityFit | None = Field(None, description="score 'complexity': its fitted line.")

    @model_validator(mode="after")
    def _complexity_line(self) -> AnomalySpec:
        if (self.score == "complexity") != (self.complexity is not None):
            raise ValueError("a 'complexity' score, and only that one, comes with its fitted line (complexity)")
        return self


class Provenance(_Strict):
    dataset: str
    command: str
    epochs: int | None = None
    steps: int | None = None
    seed: int | None = None
    git_commit: str | None = None
    tensorflow_version: str | None = None
    trained_at: str | None = None
    duration_s: float | None = None
    splits: dict[str, str] | None = Field(
        None, description="Which images each split holds (train, validation: the training curves, calibration: "
        "the anomaly threshold, test: the card's metrics); evaluation.json lists a photo folder's held-out files.")


class ModelCard(_Strict):
    """The contract for one exported model version; `model.json` at the version root."""

    schema_version: int = CARD_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: int = Field(ge=1)
    architecture: Architecture
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    input: InputSpec
    latents: list[LatentSpec]
    tables_sha256: str = Field(description="Hash of the entropy tables; bitstreams carry its first bytes.")
    anomaly: AnomalySpec | None = None
    rate: RateSpec | None = Field(None, description="Variable-rate models: the quality input's range.")
    effort: EffortSpec | None = Field(None, description="Models whose encoder can refine latents (`?effort=`).")
    training: Provenance
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: str | None = None

    def write(self, version_dir: Path) -> Path:
        path = Path(version_dir) / CARD_FILENAME
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, version_dir: Path) -> ModelCard:
        return cls.model_validate_json((Path(version_dir) / CARD_FILENAME).read_text())
