"""The environment TensorFlow starts in under `python -m service`, set before it is imported.

The benches that measure the service's code path in-process call it too, so that both sides of their
ratios run TensorFlow alike.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from contract.tf_logging import quiet_tensorflow


def configure_tensorflow_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """Defaults only: whatever the operator set wins.

    - TF_CPP_MIN_LOG_LEVEL: TensorFlow's start-up lines (cpu_feature_guard, oneDNN) off unless
      AEC_TF_VERBOSE=1 (`contract.tf_logging.quiet_tensorflow`, which also holds back absl's lines that
      ignore the level).
    - TF_CPU_ALLOCATOR_USE_BFC=true: TensorFlow's CPU tensors from its own pool instead of malloc. The
      server serves every block of 1 MiB or more from mmap (`server.tune_allocator`, so that freed
      images go back to the OS), and without the pool every activation of a photo's transforms was a
      fresh mapping, page-faulted in and zeroed again on every request. The pool keeps TensorFlow's
      high-water mark instead (docs/operators.md has both figures); `false` turns it off and
      TF_CPU_BFC_MEM_LIMIT_IN_MB caps it.
    """
    quiet_tensorflow(environ)
    environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
