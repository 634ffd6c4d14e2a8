"""`python -m service`: one uvicorn worker (throughput comes from batching, not from model copies).

The server is `service.app.server`: uvicorn with caps on request heads and connections and deadlines for
heads and bodies. On SIGTERM/SIGINT it stops accepting connections, lets in-flight requests finish (up to
AEC_SHUTDOWN_TIMEOUT_S), runs the app's shutdown (which drains the batch queues), writes the last log
lines and exits 0.
"""

from __future__ import annotations

import os
import sys

from contract.tf_logging import tf_log_level

# TensorFlow's start-up lines (cpu_feature_guard, oneDNN) off unless AEC_TF_VERBOSE=1; before it is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level())
# TensorFlow's CPU tensors from its own pool (BFC) instead of malloc: `tune_allocator` serves every block
# of 1 MiB or more from mmap so that freed images go back to the OS, and without the pool every
# activation of a photo's transforms was a fresh mapping, page-faulted in and zeroed again on every
# request. The pool keeps TensorFlow's high-water mark instead (docs/operators.md has both figures);
# TF_CPU_ALLOCATOR_USE_BFC=false turns it off, TF_CPU_BFC_MEM_LIMIT_IN_MB caps it.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from service.app.config import Settings
from service.app.main import create_app
from service.app.server import serve, tune_allocator


def main() -> int:
    tune_allocator()  # before anything big is allocated: freed images go back to the OS
    settings = Settings()
    return serve(create_app(settings), settings)


if __name__ == "__main__":
    sys.exit(main())
