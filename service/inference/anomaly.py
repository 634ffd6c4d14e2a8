"""Anomaly scoring: the model's `anomaly_score` signature against the threshold calibrated at export.

The service never invents a threshold: it comes from the model card (a quantile of held-out normal
scores at a target false-positive rate), so a score means the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.card import AnomalySpec
from service.inference import imaging
from service.inference.errors import AnomalyNotCalibrated
from service.inference.loaded import LoadedModel


@dataclass(frozen=True)
class AnomalyResult:
    score: float
    threshold: float
    is_anomaly: bool
    normalized_score: float
    plan: imaging.SizePlan
    error_map: np.ndarray | None  # float32 [H, W] at the original image size, when asked for


def require_calibrated(model: LoadedModel) -> None:
    if model.card.anomaly is None:
        raise AnomalyNotCalibrated(
            f"model {model.name} version {model.version} has no calibrated anomaly threshold "
            "(its card has no 'anomaly' section); pick a model that lists one in GET /models"
        )


async def score(model: LoadedModel, source: imaging.SourceImage, *, with_map: bool = False) -> AnomalyResult:
    require_calibrated(model)
    assert model.card.anomaly is not None
    plan = imaging.plan_size(source.height, source.width, model.card.input)
    work = max(plan.height * plan.width, plan.model_height * plan.model_width)
    seen = await imaging.off_loop(work, imaging.model_input, source, plan, model.card.input.channels)
    outputs = await model.call("anomaly_score", {"images": seen})
    value = float(np.asarray(outputs["score"]).reshape(()))
    threshold = float(model.card.anomaly.threshold)
    error_map = None
    if with_map:  # back at the original size: a resize of up to the pixel limit, off the event loop
        error_map = await imaging.off_loop(work, _original_size, np.asarray(outputs["error_map"], dtype=np.float32), plan)
    return AnomalyResult(value, threshold, value > threshold, normalize(value, model.card.anomaly), plan, error_map)


def _original_size(error_map: np.ndarray, plan: imaging.SizePlan) -> np.ndarray:
    return imaging.from_model(error_map[..., None], plan)[..., 0]


def normalize(score: float, anomaly: AnomalySpec) -> float:
    """Map a raw score into [0, 1] with the threshold at exactly 0.5 (anomalib's convention).

    The spread of held-out normal scores (their max - min, from the card) sets the scale, so the
    same normalised value means the same distance from the threshold for every model and score kind.
    """
    stats = anomaly.calibration
    spread = max(stats.max - stats.min, 1e-12)
    return float(min(1.0, max(0.0, 0.5 + (score - anomaly.threshold) / spread)))
