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
        "--duration", "0.4", "--warmup", "0.1", "--concurrency", "1,4", "--client", "httpx,raw",
        "--extra-batch", "", "--json", str(out), "--floor", "--asgi", "--bare",
    ])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())

    assert code == 0, printed
    cells = report["cells"]
    assert {(c["client"], c["endpoint"], c["concurrency"]) for c in cells} == {
        (client, endpoint, n) for client in ("httpx", "raw") for endpoint in ("reconstruct", "encode", "floor", "bare")
        for n in (1, 4)
    } | {("asgi", endpoint, n) for endpoint in ("reconstruct", "encode") for n in (1, 4)}
    for cell in cells:
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["images"] > 0 and cell["img_s"] > 0, cell
        assert math.isfinite(cell["p50_ms"]) and cell["p99_ms"] >= cell["p50_ms"] > 0, cell
        assert cell["server_cpu"] is not None and cell["server_cpu"] > 0, cell
    assert any(c["mean_batch"] for c in cells), "the batch size comes from the server's /metrics"
    assert all(c["client_cpu"] is None for c in cells if c["client"] == "asgi"), "no client: the app is called"
    floor = [c for c in cells if c["endpoint"] == "floor"]
    assert all(c["mean_batch"] is None for c in floor), "the floor has no batcher (and no /metrics)"

    rows = {(r["what"], r["batch"]) for r in report["inprocess"]}
    batch = report["max_batch_size"]
    assert {("reconstruct", 1), ("reconstruct", batch), ("encode+entropy", 1), ("encode+entropy", batch)} <= rows
    assert all(r["img_s"] > 0 for r in report["inprocess"])
    bare = [c for c in cells if c["endpoint"] == "bare"]
    assert all(c["mean_batch"] for c in bare), "the bare path runs the model through its batcher"
    served = [c for c in cells if c["endpoint"] != "floor"]  # HTTP, ASGI and bare cells each get their ratio
    assert len(report["ratios"]) == len(served) and all(r[f"b{batch}"] > 0 for r in report["ratios"])

    for endpoint in ("/reconstruct", "/encode", "/floor", "/bare"):
        assert endpoint in printed
    assert printed.count("service/in-process") == len(served)


def test_the_floor_answers_every_post_with_its_png_after_reading_the_body() -> None:
    """The floor is a real server (the service's uvicorn configuration) that reads a whole body and
    answers it; /readyz is what the launcher waits for."""
    import httpx

    from bench.launcher import server_process
    from bench.servelib.floor import ANSWER

    with server_process(module="bench.servelib.floor") as server, httpx.Client(trust_env=False) as client:
        answer = client.post(f"{server.url}/reconstruct?model=x", content=b"p" * 300_000,
                             headers={"Content-Type": "image/png"})
        assert (answer.status_code, answer.headers["content-type"], answer.content) == (200, "image/png", ANSWER)
        assert client.get(f"{server.url}/readyz").json() == {"status": "ready"}


def test_asgi_drive_counts_answers_and_errors_as_the_http_client_does() -> None:
    """`bench.servelib.asgi.drive` hands the app real ASGI messages: what it answers 200 is timed, anything
    else is an error with its status and body, as over HTTP."""
    import asyncio

    from bench.servelib.asgi import drive

    seen: list[tuple[str, bytes, bytes]] = []

    async def app(scope, receive, send) -> None:
        message = await receive()
        seen.append((scope["path"], scope["query_string"], message["body"]))
        status = 200 if scope["path"] == "/reconstruct" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"nope" if status != 200 else b"png"})

    ok = asyncio.run(drive(app, "reconstruct", "model=m", b"body", 2, 0.2, 0.05))
    bad = asyncio.run(drive(app, "missing", "", b"body", 1, 0.1, 0.0))

    assert ok["errors"] == 0 and ok["images"] > 0 and ok["p99_ms"] >= ok["p50_ms"] > 0
    assert ("/reconstruct", b"model=m", b"body") in seen
    assert bad["images"] == 0 and bad["errors"] > 0 and bad["error_samples"] == ["HTTP 404: nope"]


def test_the_bare_path_reconstructs_the_digit_as_the_service_does(model_store) -> None:
    """The bare path answers a real reconstruction from the served model: the same pixels and MSE as the
    service's /reconstruct of the same digit, through the same app (both driven in-process over ASGI);
    GET routes stay the app's."""
    import asyncio
    import io

    import numpy as np
    from PIL import Image

    from bench.servelib.asgi import _request, call
    from bench.servelib.bare import bare
    from service.app.config import Settings
    from service.app.main import create_app

    digit = serve.digit_png()
    app = create_app(Settings(_env_file=None, models_dir=model_store.path, default_model=model_store.tiny,
                              reload_interval_s=0))

    async def both() -> dict[str, tuple[int, bytes]]:
        async with app.router.lifespan_context(app):
            answers = {name: await call(route, *_request("reconstruct", "", digit))
                       for name, route in (("service", app), ("bare", bare(app)))}
            ready = _request("readyz", "", b"")[0] | {"method": "GET", "headers": []}
            answers["readyz"] = await call(bare(app), ready, [{"type": "http.request", "body": b""}])
            return answers

    answers = asyncio.run(both())
    assert answers["service"][0] == answers["bare"][0] == answers["readyz"][0] == 200
    service_pixels, bare_pixels = (np.asarray(Image.open(io.BytesIO(answers[k][1]))).astype(int)
                                   for k in ("service", "bare"))
    assert bare_pixels.shape == service_pixels.shape
    assert np.abs(bare_pixels - service_pixels).max() <= 1
    assert b"ready" in answers["readyz"][1]


def test_digit_png_is_a_real_28x28_png(tmp_path) -> None:
    import io

    from PIL import Image

    for idx_dir in (None, tmp_path):  # the shared MNIST digit when present, else the drawn one
        image = Image.open(io.BytesIO(serve.digit_png(idx_dir=idx_dir)))
        assert (image.format, image.size, image.mode) == ("PNG", (28, 28), "L")
