"""bench/effort_memory.py: a real refinement of a real model, in a fresh process per size, and its table."""

from __future__ import annotations

import json

from bench.effort_memory import main


def test_the_bench_refines_and_reports_each_size(effort_store, tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    assert main(["--models-dir", str(effort_store), "--model", "codec-effort", "--sizes", "0.02,0.05",
                 "--effort", "1", "--image", str(tmp_path / "none.png"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [round(r["megapixels"], 2) for r in rows] == [0.02, 0.05]
    for r in rows:
        assert r["model"].startswith("codec-effort/") and r["effort"] == 1
        # ru_maxrss read in the right unit: a process with TensorFlow and a model loaded holds 100s of MiB
        assert 100 < r["loaded_mib"] < 16 * 1024, r
        assert r["plain_s"] > 0 and r["refined_s"] > r["plain_s"], r  # a refinement runs gradient steps
        assert r["plain_bytes"] > 0 and r["refined_bytes"] > 0 and r["refined_bytes"] != r["plain_bytes"]
    table = capsys.readouterr().out
    for r in rows:
        assert f"| {r['width']}x{r['height']} | {r['megapixels']:.2f} |" in table
