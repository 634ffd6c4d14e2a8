"""`python -m service`: one uvicorn worker (throughput comes from batching, not from model copies).

The server is `service.app.server`: uvicorn with caps on request heads and connections and deadlines for
heads and bodies. On SIGTERM/SIGINT it stops accepting connections, lets in-flight requests finish (up to
AEC_SHUTDOWN_TIMEOUT_S), runs the app's shutdown (which drains the batch queues), writes the last log
lines and exits 0.
"""

from __future__ import annotations

import sys

from service.process_env import configure_tensorflow_env

configure_tensorflow_env()  # before TensorFlow is imported

from service.app.config import Settings
from service.app.main import create_app
from service.app.server import serve, tune_allocator


def main() -> int:
    tune_allocator()  # before anything big is allocated: freed images go back to the OS
    settings = Settings()
    return serve(create_app(settings), settings)


if __name__ == "__main__":
    sys.exit(main())
