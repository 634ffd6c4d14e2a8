"""The server floor (`bench/serve.py --floor`): `python -m service`'s HTTP server with nothing behind it.

    python -m bench.servelib.floor        # AEC_HOST / AEC_PORT and the server's limits from the environment

The same uvicorn configuration, guarded protocol and settings as the service (`service.app.server.serve`),
around an ASGI app that reads each request's body and answers it with one fixed small PNG. What a
request costs here is what it costs before the service does any work of its own (routing, uploads,
decoding, batching, the model, the answer, the access log): the part of the gap between the service and
the model in-process that no change to the service's code can remove.
"""

from __future__ import annotations

import sys

import numpy as np
from starlette.types import Receive, Scope, Send

from service.inference.png import encode_png

#: A 28×28 grey PNG, the size of a digit's answer, written as the service writes its answers.
ANSWER = encode_png((np.arange(28 * 28, dtype=np.uint32) * 7 % 256).astype(np.uint8).reshape(28, 28))
_READY = b'{"status":"ready"}'


async def read_body(receive: Receive) -> bytes | None:
    """A request's whole body from its ASGI messages; None when the client disconnected first."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """/readyz answers ready (the launcher waits for it); every other request gets ANSWER after its body."""
    if scope["type"] != "http" or await read_body(receive) is None:
        return
    body, media = (_READY, b"application/json") if scope["path"] == "/readyz" else (ANSWER, b"image/png")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> int:
    from service.app.config import Settings
    from service.app.server import serve

    return serve(app, Settings())


if __name__ == "__main__":
    sys.exit(main())
