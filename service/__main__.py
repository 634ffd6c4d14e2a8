"""`python -m service`: one uvicorn worker (throughput comes from batching, not from model copies)."""

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
    )


if __name__ == "__main__":
    main()
