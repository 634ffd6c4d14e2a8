"""Anomaly threshold from held-out *normal* images: a quantile at a target false-positive rate.

The verdict then means "rarer than (1 - target_fpr) of normal images" on every backend, and the
score distribution's summary travels in the card so the service can normalise scores without data.

Why not just the empirical quantile: a one-class model has a few hundred held-out normal images at
best, and the 99% quantile of ~130 scores is one of the two largest - a noisy estimate whose threshold
lets through, in simulations of skewed score distributions, over 2% of normals in a quarter of the
runs. The default instead makes the scores normal with a Yeo-Johnson power transform fitted by
maximum likelihood (scipy), takes the normal quantile there and maps it back: it uses every score,
not just the top two, and in the same simulations is about right on average with half the spread
(tests/training/test_calibrate.py). With many held-out scores (`EMPIRICAL_MIN_N` and more) the
empirical quantile is precise enough and assumes nothing, so it is used as is.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from contract.card import AnomalySpec, ComplexityFit, ScoreStats

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
Method = Literal["auto", "empirical", "yeo-johnson"]
#: From this many held-out scores per expected false positive (n · target_fpr ≥ 20) on, "auto" is empirical.
EMPIRICAL_MIN_EXPECTED_TAIL = 20


def summarize(scores: np.ndarray) -> ScoreStats:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("cannot calibrate on zero held-out images")
    return ScoreStats(
        n=int(scores.size), mean=float(scores.mean()), std=float(scores.std()),
        min=float(scores.min()), max=float(scores.max()),
        quantiles={str(q): float(np.quantile(scores, q)) for q in SUMMARY_QUANTILES},
    )


def empirical_quantile(scores: np.ndarray, q: float) -> float:
    """The q quantile, rounded up to an observed score ('higher', so ties stay normal)."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), q, method="higher"))


def yeo_johnson_quantile(scores: np.ndarray, q: float) -> float | None:
    """The q quantile of the normal fitted after a Yeo-Johnson transform, mapped back to scores.

    None when the fit is degenerate (constant scores, a non-finite result); callers fall back to the
    empirical quantile then.
    """
    from scipy import optimize, stats

    x = np.asarray(scores, dtype=np.float64)
    if x.size < 8 or np.ptp(x) == 0:
        return None
    # Standardise first: the transform's likelihood is scale-sensitive and scores range from 1e-4 (MSE)
    # to hundreds (bits), so the fit works on z-scores and the quantile is mapped back at the end.
    center, scale = float(np.median(x)), float(np.std(x))
    z = (x - center) / scale
    transformed, lmbda = stats.yeojohnson(z)
    mu, sigma = float(np.mean(transformed)), float(np.std(transformed, ddof=1))
    target = mu + float(stats.norm.ppf(q)) * sigma
    if not np.isfinite(target) or sigma <= 0:
        return None

    def gap(value: float) -> float:  # the transform is increasing in its input: a root finder inverts it
        return float(stats.yeojohnson(np.array([value]), lmbda)[0]) - target

    low, high = float(z.min()), float(z.max())
    span = max(high - low, 1.0)
    for _ in range(60):  # widen the bracket until it holds the root
        if gap(low) <= 0 <= gap(high):
            break
        low, high = low - span, high + span
        span *= 2
    else:
        return None
    root = optimize.brentq(gap, low, high, xtol=1e-12)
    value = center + root * scale
    return float(value) if np.isfinite(value) else None


def threshold_at(scores: np.ndarray, target_fpr: float, method: Method = "auto") -> tuple[float, str]:
    """(threshold, method used) for a false-positive rate of `target_fpr` on normal scores."""
    if not 0 < target_fpr < 1:
        raise ValueError("target false-positive rate must be in (0, 1)")
    scores = np.asarray(scores, dtype=np.float64)
    if method == "auto":
        method = "empirical" if scores.size * target_fpr >= EMPIRICAL_MIN_EXPECTED_TAIL else "yeo-johnson"
    if method == "yeo-johnson":
        value = yeo_johnson_quantile(scores, 1 - target_fpr)
        if value is not None:
            return value, "yeo-johnson"
    return empirical_quantile(scores, 1 - target_fpr), "empirical"


def calibrate(scores: np.ndarray, *, target_fpr: float, calibrated_on: str, score: str = "mse",
              normal_classes: list[int] | None = None, method: Method = "auto",
              complexity: dict | None = None) -> AnomalySpec:
    """The card's anomaly section: threshold at `target_fpr` plus the held-out score summary.

    `complexity` (score "complexity"): the fitted line (training.complexity.fit_line plus `fitted_on`);
    `scores` must then be the corrected scores of held-out normal images, computed by the model with
    that line (the threshold is a quantile of the very scores the exported signature returns)."""
    threshold, used = threshold_at(scores, target_fpr, method)
    return AnomalySpec(score=score, threshold=threshold, target_fpr=target_fpr, calibration=summarize(scores),
                       calibrated_on=calibrated_on, threshold_method=used, normal_classes=normal_classes,
                       complexity=None if complexity is None else ComplexityFit(**complexity))
