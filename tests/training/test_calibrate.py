"""Threshold calibration: on skewed score distributions the Yeo-Johnson estimate hits the target
false-positive rate on average with less spread than the empirical quantile of few held-out scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.calibrate import calibrate, empirical_quantile, threshold_at, yeo_johnson_quantile

SKEWED = {
    "gamma(2)": stats.gamma(2.0, scale=1e-3),  # MSE-like: small positive numbers
    "lognormal(0.6)": stats.lognorm(0.6, scale=0.05),  # 1 - SSIM-like
    "weibull(1.5)+shift": stats.weibull_min(1.5, loc=-1.0),  # z-scored "combined" scores cross zero
}


@pytest.mark.parametrize("name", list(SKEWED))
def test_yeo_johnson_is_on_target_with_less_spread(name: str) -> None:
    dist, rng, n, target = SKEWED[name], np.random.default_rng(7), 128, 0.01
    fpr = {"empirical": [], "yeo-johnson": []}
    for _ in range(150):
        scores = dist.rvs(size=n, random_state=rng)
        fpr["empirical"].append(dist.sf(empirical_quantile(scores, 1 - target)))
        fpr["yeo-johnson"].append(dist.sf(threshold_at(scores, target, "yeo-johnson")[0]))
    emp, yj = np.array(fpr["empirical"]), np.array(fpr["yeo-johnson"])
    assert 0.005 < yj.mean() < 0.015, yj.mean()  # the true FPR of the threshold, averaged over draws
    assert yj.std() < 0.85 * emp.std()
    assert np.mean(yj > 2 * target) < np.mean(emp > 2 * target)


def test_auto_uses_the_empirical_quantile_when_the_tail_is_well_sampled() -> None:
    scores = np.random.default_rng(0).gamma(2.0, size=5000)
    threshold, method = threshold_at(scores, 0.01)
    assert method == "empirical" and threshold == empirical_quantile(scores, 0.99)
    assert threshold_at(scores[:200], 0.01)[1] == "yeo-johnson"


def test_degenerate_scores_fall_back_to_empirical() -> None:
    assert yeo_johnson_quantile(np.full(50, 0.3), 0.99) is None
    assert threshold_at(np.full(50, 0.3), 0.01) == (0.3, "empirical")
    with pytest.raises(ValueError):
        threshold_at(np.ones(10), 1.5)


def test_card_section_records_method_and_summary() -> None:
    scores = np.random.default_rng(1).lognormal(size=150)
    spec = calibrate(scores, target_fpr=0.05, calibrated_on="test", score="ssim", normal_classes=[3])
    assert spec.threshold_method == "yeo-johnson" and spec.normal_classes == [3]
    assert spec.calibration.n == 150 and spec.calibration.max == pytest.approx(scores.max())
    assert np.quantile(scores, 0.85) < spec.threshold < scores.max() * 3
