"""Anomaly threshold from held-out *normal* images: a quantile at a target false-positive rate.

The verdict then means "rarer than (1 - target_fpr) of normal images" on every backend, and the
score distribution's summary travels in the card so the service can normalise scores without data.
"""

from __future__ import annotations

import numpy as np

from service.contract.card import AnomalySpec, ScoreStats

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def summarize(scores: np.ndarray) -> ScoreStats:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("cannot calibrate on zero held-out images")
    return ScoreStats(
        n=int(scores.size), mean=float(scores.mean()), std=float(scores.std()),
        min=float(scores.min()), max=float(scores.max()),
        quantiles={str(q): float(np.quantile(scores, q)) for q in SUMMARY_QUANTILES},
    )


def calibrate(scores: np.ndarray, *, target_fpr: float, calibrated_on: str, score: str = "mse",
              normal_classes: list[int] | None = None) -> AnomalySpec:
    """Threshold = the (1 - target_fpr) quantile of normal scores ('higher' so ties stay normal)."""
    if not 0 < target_fpr < 1:
        raise ValueError("target false-positive rate must be in (0, 1)")
    threshold = float(np.quantile(np.asarray(scores, dtype=np.float64), 1 - target_fpr, method="higher"))
    return AnomalySpec(score=score, threshold=threshold, target_fpr=target_fpr, calibration=summarize(scores),
                       calibrated_on=calibrated_on, normal_classes=normal_classes)
