"""bench/serve.py end to end, briefly: in-process rows, a real `python -m service` subprocess, both clients.

No timing thresholds (the machine is shared): the table must have its rows, no request may fail, and
every throughput must be positive.
"""

from __future__ import annotations

import json
import math

from bench import serve


def test_serve_bench_smoke(model_store, tmp_path, capsys) -> None:
    out = tmp_path / "serve.json"
    code = serve.main([
        "--models-dir", str(model_store.path), "--model", model_store.tiny,
        "--duration", "1", "--warmup", "0.3", "--concurrency", "1,4", "--client", "httpx,raw",
        "--extra-batch", "", "--json", str(out),
    ])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())

    assert code == 0, printed
    cells = report["cells"]
    assert {(c["client"], c["endpoint"], c["concurrency"]) for c in cells} == {
        (client, endpoint, n) for client in ("httpx", "raw") for endpoint in ("reconstruct", "encode") for n in (1, 4)
    }
    for cell in cells:
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["images"] > 0 and cell["img_s"] > 0, cell
        assert math.isfinite(cell["p50_ms"]) and cell["p99_ms"] >= cell["p50_ms"] > 0, cell
        assert cell["server_cpu"] is not None and cell["server_cpu"] > 0, cell
    assert any(c["mean_batch"] for c in cells), "the batch size comes from the server's /metrics"

    rows = {(r["what"], r["batch"]) for r in report["inprocess"]}
    batch = report["max_batch_size"]
    assert {("reconstruct", 1), ("reconstruct", batch), ("encode+entropy", 1), ("encode+entropy", batch)} <= rows
    assert all(r["img_s"] > 0 for r in report["inprocess"])
    assert len(report["ratios"]) == len(cells) and all(r[f"b{batch}"] > 0 for r in report["ratios"])

    for endpoint in ("/reconstruct", "/encode"):
        assert endpoint in printed
    assert printed.count("service/in-process") == len(cells)


def test_digit_png_is_a_real_28x28_png(tmp_path) -> None:
    import io

    from PIL import Image

    for idx_dir in (None, tmp_path):  # the shared MNIST digit when present, else the drawn one
        image = Image.open(io.BytesIO(serve.digit_png(idx_dir=idx_dir)))
        assert (image.format, image.size, image.mode) == ("PNG", (28, 28), "L")
