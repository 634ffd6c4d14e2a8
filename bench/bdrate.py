"""Bjøntegaard delta rate (VCEG-M33) between two rate–distortion curves, plus the curve helpers it needs.

BD-rate = the average difference of log-rate between two curves, taken over the PSNR interval both
curves cover, as a percentage: −20 means the test codec needs 20% fewer bits than the anchor for the
same PSNR on average. log-rate is fitted as a function of PSNR either with a piecewise cubic Hermite
interpolant (`"pchip"`, what the JCT-VC/JVET common-test-condition sheets use; it passes through every
point and never overshoots) or with Bjøntegaard's original least-squares cubic polynomial (`"cubic"`,
needs four points or more).

`rate_range=(lo, hi)` ("BD-rate over 0.25–1.0 bpp") narrows the integration to the PSNR interval where
BOTH curves spend between lo and hi bits (each curve's PSNR at lo and hi read off its points, linear in
rate as `psnr_at` does); the fits themselves still use every point, so a curve shifted by a constant
rate factor gives exactly that factor over any range. Curves are reduced to their monotone frontier first (`frontier`), so a setting that
spends more bits for no more PSNR does not bend the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Method = str  # "pchip" | "cubic"


def frontier(rates: Sequence[float], psnrs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by rate, keeping only those whose PSNR beats every cheaper point (finite, rate > 0)."""
    r = np.asarray(rates, dtype=np.float64)
    p = np.asarray(psnrs, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(p) & (r > 0)
    r, p = r[keep], p[keep]
    order = np.lexsort((-p, r))  # by rate, best PSNR first among equal rates
    out_r: list[float] = []
    out_p: list[float] = []
    for rate, psnr in zip(r[order], p[order]):
        if out_p and psnr <= out_p[-1]:
            continue
        if out_r and rate == out_r[-1]:
            continue
        out_r.append(float(rate))
        out_p.append(float(psnr))
    return np.asarray(out_r), np.asarray(out_p)


def psnr_at(rates: Sequence[float], psnrs: Sequence[float], rate: float, extrapolate: bool = False) -> float | None:
    """PSNR at `rate` on the frontier, linear in rate between points; outside the covered range None, or
    with `extrapolate` the line through the two nearest frontier points (None with fewer than two)."""
    r, p = frontier(rates, psnrs)
    if len(r) == 0:
        return None
    if r[0] <= rate <= r[-1]:
        return float(np.interp(rate, r, p))
    if not extrapolate or len(r) < 2:
        return None
    i = 0 if rate < r[0] else len(r) - 2
    return float(p[i] + (rate - r[i]) * (p[i + 1] - p[i]) / (r[i + 1] - r[i]))


def _psnr_span(r: np.ndarray, p: np.ndarray, lo: float, hi: float) -> tuple[float, float] | None:
    """The PSNR interval over which a frontier's rate lies in [lo, hi] (linear in rate between points)."""
    if r[-1] < lo or r[0] > hi:
        return None
    return float(np.interp(max(lo, r[0]), r, p)), float(np.interp(min(hi, r[-1]), r, p))


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: Method) -> float:
    """∫_lo^hi f where f(x) fits the points (x strictly increasing)."""
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, y).integrate(lo, hi))
    if method == "cubic":
        poly = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    raise ValueError(f"unknown BD interpolation method {method!r} (pchip or cubic)")


def _min_points(method: Method) -> int:
    return 4 if method == "cubic" else 2


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_psnrs: Sequence[float],
    test_rates: Sequence[float],
    test_psnrs: Sequence[float],
    *,
    method: Method = "pchip",
    rate_range: tuple[float, float] | None = None,
) -> float | None:
    """BD-rate of the test curve against the anchor, in percent; None when the curves share no PSNR range
    (or a curve has too few points for `method`)."""
    curves = []
    for rates, psnrs in ((anchor_rates, anchor_psnrs), (test_rates, test_psnrs)):
        r, p = frontier(rates, psnrs)
        if len(r) < _min_points(method):
            return None
        curves.append((r, p))
    (ra, pa), (rt, pt) = curves
    lo, hi = max(pa[0], pt[0]), min(pa[-1], pt[-1])
    if rate_range is not None:
        for r, p in curves:
            span = _psnr_span(r, p, *rate_range)
            if span is None:
                return None
            lo, hi = max(lo, span[0]), min(hi, span[1])
    if not hi > lo:
        return None
    mean_diff = (_integral(pt, np.log(rt), lo, hi, method) - _integral(pa, np.log(ra), lo, hi, method)) / (hi - lo)
    return (math.exp(mean_diff) - 1.0) * 100.0


def bd_psnr(
    anchor_rates: Sequence[float],
    anchor_psnrs: Sequence[float],
    test_rates: Sequence[float],
    test_psnrs: Sequence[float],
    *,
    method: Method = "pchip",
) -> float | None:
    """BD-PSNR in dB (test minus anchor) over the log-rate interval both curves cover; None without overlap."""
    curves = []
    for rates, psnrs in ((anchor_rates, anchor_psnrs), (test_rates, test_psnrs)):
        r, p = frontier(rates, psnrs)
        if len(r) < _min_points(method):
            return None
        curves.append((np.log(r), p))
    (la, pa), (lt, pt) = curves
    lo, hi = max(la[0], lt[0]), min(la[-1], lt[-1])
    if not hi > lo:
        return None
    return (_integral(lt, pt, lo, hi, method) - _integral(la, pa, lo, hi, method)) / (hi - lo)
