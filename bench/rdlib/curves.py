"""bench/rd.py's curves: per-image and mean rate–distortion curves, PSNR (and MS-SSIM in dB) at target
rates, BD-rates over either, and the summary rows the tables print."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import bdrate

BD_RANGE = (0.25, 1.0)
OURS = "ours"
ANCHORS = ("jpeg", "webp", "avif")  # BD-rate of every curve against each of these classic codecs


@dataclass
class Summary:
    ours_keys: list[str]  # the keys of our curves (one per model version), first in `rows`
    means: dict[str, list[dict]]  # key → mean curve
    per_image: dict[str, dict[str, list[dict]]]  # key → image path → points
    labels: dict[str, str]  # key → what the tables call it
    rows: list[dict]  # one per curve
    ms_ssim_means: dict[str, list[dict]] = field(default_factory=dict)  # key → mean MS-SSIM curve (may be empty)


def image_curves(per_image: dict[str, list[dict]]) -> dict[str, tuple[list[float], list[float]]]:
    return {path: ([r["bpp"] for r in rows], [r["psnr"] for r in rows]) for path, rows in per_image.items()}


def mean_curve(per_image: dict[str, list[dict]], key: str) -> list[dict]:
    """Mean bpp and mean PSNR per setting (`key`: quality or model) over the images that have it."""
    groups: dict[Any, list[dict]] = {}
    for rows in per_image.values():
        for r in rows:
            groups.setdefault(r[key], []).append(r)
    curve = []
    for setting, rows in groups.items():
        psnrs = [r["psnr"] for r in rows]
        curve.append({key: setting, "n": len(rows), "bpp": statistics.fmean(r["bpp"] for r in rows),
                      "psnr": statistics.fmean(psnrs) if all(math.isfinite(p) for p in psnrs) else math.inf})
    return sorted(curve, key=lambda c: c["bpp"])


def ms_ssim_mean_curve(per_image: dict[str, list[dict]], key: str) -> list[dict]:
    """Per setting (`key`), over the images whose point has an MS-SSIM (measured, 161 px a side or more,
    and below 1): mean bpp, mean MS-SSIM in dB (-10·log10(1 - MS-SSIM), the quantity the BD-rate over
    MS-SSIM integrates) and mean MS-SSIM. Empty when no point has one."""
    groups: dict[Any, list[dict]] = {}
    for rows in per_image.values():
        for r in rows:
            if r.get("ms_ssim_db") is not None and math.isfinite(r["ms_ssim_db"]):
                groups.setdefault(r[key], []).append(r)
    curve = [{key: setting, "n": len(rows), "bpp": statistics.fmean(r["bpp"] for r in rows),
              "ms_ssim_db": statistics.fmean(r["ms_ssim_db"] for r in rows),
              "ms_ssim": statistics.fmean(r["ms_ssim"] for r in rows)} for setting, rows in groups.items()]
    return sorted(curve, key=lambda c: c["bpp"])


def psnr_at_targets(curves: dict[str, tuple[list[float], list[float]]], targets: Sequence[float]) -> list[dict]:
    """Per target: the mean over the images whose own curve reaches it (`mean_psnr`, `images` of `of`),
    and the mean over every image, each curve extended linearly beyond its own range where it does not
    reach the target (`mean_psnr_all`, `extrapolated` images): the reading issue #4's reference figures use."""
    out = []
    for target in targets:
        values: list[float] = []  # images whose curve reaches the target
        extended: list[float] = []  # the others, read off their curve's straight extension
        for r, p in curves.values():
            if (v := bdrate.psnr_at(r, p, target)) is not None:
                values.append(v)
            elif (v := bdrate.psnr_at(r, p, target, extrapolate=True)) is not None:
                extended.append(v)
        every = values + extended
        out.append({"bpp": target, "mean_psnr": statistics.fmean(values) if values else None,
                    "images": len(values), "of": len(curves),
                    "mean_psnr_all": statistics.fmean(every) if every and len(every) == len(curves) else None,
                    "extrapolated": len(extended)})
    return out


def psnr_on_mean_curve(curve: list[dict], targets: Sequence[float], metric: str = "psnr") -> list[dict]:
    """PSNR (or `metric`, e.g. ms_ssim_db) at each target bpp on a mean curve (its frontier, linear in
    bpp); None outside its range."""
    rates, values = [c["bpp"] for c in curve], [c[metric] for c in curve]
    return [{"bpp": t, metric: bdrate.psnr_at(rates, values, t)} for t in targets]


def bd_pair(anchor: list[dict], test: list[dict], method: str, metric: str = "psnr") -> dict[str, float | None]:
    """BD-rate of `test` against `anchor` over `metric` (PSNR, or MS-SSIM in dB: "ms_ssim_db"), over the
    whole range the curves share and over 0.25-1.0 bpp."""
    args = ([c["bpp"] for c in anchor], [c[metric] for c in anchor], [c["bpp"] for c in test],
            [c[metric] for c in test])
    return {"full": bdrate.bd_rate(*args, method=method),
            "0.25-1.0": bdrate.bd_rate(*args, method=method, rate_range=BD_RANGE)}


def per_image_bd(anchor: dict[str, list[dict]], test: dict[str, list[dict]], method: str) -> dict[str, Any]:
    values: dict[str, list[float]] = {"full": [], "0.25-1.0": []}
    for path, rows in test.items():
        if path not in anchor:
            continue
        pair = bd_pair(anchor[path], rows, method)
        for key, value in pair.items():
            if value is not None:
                values[key].append(value)
    return {key: {"mean": statistics.fmean(v) if v else None, "images": len(v), "of": len(test)}
            for key, v in values.items()}


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def summarize(ours_models: list[dict], ours_points: dict[str, list[dict]], classic: dict[str, dict[str, list[dict]]],
              classic_labels: dict[str, str], speeds: dict[str, list[tuple[float, float]]], targets: Sequence[float],
              bd_method: str) -> Summary:
    """One row per curve: one per version of our models (several versions of a model, e.g. natural/8 and
    natural/10, side by side, and one per encoder effort above 0), then one per classic codec."""
    version_of = {m["name"]: f"{m['model']}/{m['version']}" + (f" effort {m['effort']}" if m.get("effort") else "")
                  for m in ours_models}
    versions = list(dict.fromkeys(version_of.values()))
    ours_keys = {v: OURS if len(versions) == 1 else f"{OURS}:{v}" for v in versions}
    ours_by_key = {key: {path: [r for r in rs if ours_keys[version_of[r["model"]]] == key]
                         for path, rs in ours_points.items()} for key in ours_keys.values()}
    means = {key: mean_curve(points, "model") for key, points in ours_by_key.items()}
    means |= {key: mean_curve(per, "quality") for key, per in classic.items()}
    per_image = dict(ours_by_key) | classic
    labels = {key: f"ours ({v})" for v, key in ours_keys.items()} | classic_labels
    ms_means = {key: ms_ssim_mean_curve(points, "model") for key, points in ours_by_key.items()}
    ms_means |= {key: ms_ssim_mean_curve(per, "quality") for key, per in classic.items()}
    rows = []
    for key in per_image:
        row: dict[str, Any] = {"codec": key, "label": labels[key],
                               "psnr_at": psnr_at_targets(image_curves(per_image[key]), targets),
                               "psnr_on_mean_curve": psnr_on_mean_curve(means[key], targets), "bd": {}}
        for anchor in ANCHORS:
            if anchor in means:
                row["bd"][anchor] = bd_pair(means[anchor], means[key], bd_method)
                row.setdefault("bd_per_image", {})[anchor] = per_image_bd(per_image[anchor], per_image[key], bd_method)
        if ms_means[key]:
            row["ms_ssim_on_mean_curve"] = psnr_on_mean_curve(ms_means[key], targets, "ms_ssim_db")
            row["bd_ms_ssim"] = {anchor: bd_pair(ms_means[anchor], ms_means[key], bd_method, "ms_ssim_db")
                                 for anchor in ANCHORS if ms_means.get(anchor)}
        if key in ours_by_key:
            rows_ours = [r for rs in ours_by_key[key].values() for r in rs]
            row["enc_s_per_mp"] = median(r["enc_s_per_mp"] for r in rows_ours)
            row["dec_s_per_mp"] = median(r["dec_s_per_mp"] for r in rows_ours)
        else:
            row["enc_s_per_mp"] = median(s[0] for s in speeds[key])
            row["dec_s_per_mp"] = median(s[1] for s in speeds[key])
        rows.append(row)
    return Summary(list(ours_by_key), means, per_image, labels, rows, ms_means)
