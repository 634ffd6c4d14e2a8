"""The bare path (`bench/serve.py --bare`): the least a /reconstruct of a small image can do in Python.

    python -m bench.servelib.bare         # AEC_ settings from the environment, as `python -m service`

The service's server and app (`create_app`: its lifespan loads, warms and checks the models; GET routes
such as /readyz and /metrics are the app's), except that every POST goes to `reconstruct` below: read
the body, decode it with Pillow, run the default model's `reconstruct` signature through the model's
own micro-batcher, measure the MSE, write the PNG, answer with two headers. No request id, access log,
metrics, API key, query, limits, budgets, timeouts, size plans, channel matching or error handling.
What it serves is the ceiling of any Python service built on these pieces on this machine: the gap from
it to the model in-process is what no change to the service's own code can remove, and the gap from the
service to it is everything the service does for its users.
Fixed-size models only, and images already at the model's size and channels (the bench's digit).
"""

from __future__ import annotations

import io
import math
import sys

from service.process_env import configure_tensorflow_env

configure_tensorflow_env()  # before TensorFlow is imported, as `python -m service` does

import numpy as np
from PIL import Image
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.servelib.floor import read_body
from service.inference.png import encode_png


def bare(app: ASGIApp) -> ASGIApp:
    """`app` with every POST answered by the bare reconstruct of the default model."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        image = Image.open(io.BytesIO(body))
        pixels = np.asarray(image, np.uint8)
        model = app.state.registry.resolve(None, None)  # type: ignore[attr-defined]
        seen = pixels.reshape(*pixels.shape[:2], -1).astype(np.float32) * (1 / 255)
        output = (await model.call("reconstruct", {"images": seen}))["images"]
        difference = (seen - output).ravel()
        mse = max(float(difference @ difference) / difference.size, 1e-12)
        answer = encode_png(np.clip(output * 255 + 0.5, 0, 255).astype(np.uint8))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"image/png"), (b"content-length", str(len(answer)).encode()),
            (b"x-mse", f"{mse:.8g}".encode()), (b"x-psnr", f"{10 * math.log10(1 / mse):.4f}".encode())]})
        await send({"type": "http.response.body", "body": answer})

    return route


def main() -> int:
    from service.app.config import Settings
    from service.app.main import create_app
    from service.app.server import serve, tune_allocator

    tune_allocator()
    settings = Settings()
    return serve(bare(create_app(settings)), settings)


if __name__ == "__main__":
    sys.exit(main())
