"""bench/anomaly.py's tables from saved runs: AUROC means over seeds, pooled false-positive rate."""

from __future__ import annotations

import json

import pytest

from bench import anomaly


def _row(model: str, digit: int, seed: int, ssim: float, fpr: float, n: int = 200) -> dict:
    return {"model": model, "digit": digit, "seed": seed, "mse": 0.5, "ssim": ssim, "bits": 0.5, "combined": 0.5,
            "observed_fpr": fpr, "normal_test_images": n, "score": "ssim", "threshold": 0.1,
            "threshold_method": "yeo-johnson"}


def test_report_merges_runs_into_one_table(tmp_path, capsys) -> None:
    first = [_row("a", d, s, 0.9 + 0.01 * s, 0.01) for d in (0, 1) for s in (0, 1)]
    second = [_row("b", d, 0, 0.6, 0.03 if d else 0.0) for d in (0, 1)]
    for name, rows in (("1.json", first), ("2.json", second)):
        (tmp_path / name).write_text(json.dumps(rows))
    assert anomaly.main(["--report", str(tmp_path / "1.json"), str(tmp_path / "2.json")]) == 0
    out = capsys.readouterr().out
    assert "digit | a (2 seeds) | b (1 seed)" in out
    assert "0 | 0.905 ±0.005 | 0.600" in out and "**mean** | **0.905** | **0.600**" in out
    # pooled: a = 8 false positives of 800, b = 6 of 400; one run of b is above twice the target
    assert "a | 4 | 800 | 1.00% (" in out and "b | 2 | 400 | 1.50% (" in out
    assert out.strip().splitlines()[-1].endswith("| 1 | 3.0%")


def test_wilson_interval_brackets_the_rate() -> None:
    low, high = anomaly.wilson(10, 1000)
    assert low < 0.01 < high and high - low == pytest.approx(0.0125, abs=0.002)
    assert anomaly.wilson(0, 100)[0] == 0.0
