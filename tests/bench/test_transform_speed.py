"""bench/transform_speed.py on a tiny codec: one row per variant, in order, positive times, and a variant
with more synthesis work (residual blocks) is not the same model as the first."""

from __future__ import annotations

import json

from bench import transform_speed

TINY = {"num_filters": 16, "latent_channels": 24, "hyper_channels": 16, "support_channels": 24, "slices": [4, 8, 12],
        "param_hidden": [16, 16], "lrp_hidden": 16, "lmbdas": [0.002, 0.02, 0.2], "level_synthesis": True}


def test_one_row_per_variant_with_positive_times(tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    variants = [{}, {"synthesis_residual": [1, 1, 1]}]
    code = transform_speed.main(["--model-args", json.dumps(TINY), *[a for v in variants for a in ("--variant", json.dumps(v))],
                                 "--megapixels", "0.05", "--rounds", "1", "--threads", "0", "--json", str(out)])
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())

    assert code == 0
    assert [row["variant"] for row in rows] == variants
    assert all(row["analysis_s_per_mp"] > 0 and row["synthesis_s_per_mp"] > 0 for row in rows)
    assert rows[0]["megapixels"] == rows[1]["megapixels"] > 0
    assert '{"synthesis_residual": [1, 1, 1]}' in printed and "1.00x" in printed
