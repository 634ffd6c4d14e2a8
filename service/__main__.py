"""`python -m service`: one uvicorn worker (throughput comes from batching, not from model copies).

On SIGTERM/SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to
AEC_SHUTDOWN_TIMEOUT_S), then runs the app's shutdown, which drains the batch queues.
"""

from __future__ import annotations

import uvicorn

from service.app.config import Settings
from service.app.main import create_app


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,  # our handler (service.app.logs) formats uvicorn's lines too
        access_log=False,  # the middleware logs each request with its request id
        timeout_graceful_shutdown=settings.shutdown_timeout_s or None,
    )


if __name__ == "__main__":
    main()
