"""TensorFlow's start-up noise, quiet by default in every entry point (`python -m service`, `python -m
training`, the bench scripts): its C++ log lines at import (cpu_feature_guard's "This TensorFlow binary is
optimized to use available CPU instructions...", oneDNN's "oneDNN custom operations are on...") and other
info and warning lines, which say nothing about this project's work. Errors still print.

`AEC_TF_VERBOSE=1` (or true/yes/on) asks for them back; an explicit TF_CPP_MIN_LOG_LEVEL always wins.
Entry points run `os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level())` before TensorFlow is
imported (the level is read once, at import). Imports nothing.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

VERBOSE_ENV = "AEC_TF_VERBOSE"
#: TF_CPP_MIN_LOG_LEVEL when quiet: 2 hides INFO and WARNING, keeps ERROR and FATAL.
QUIET_LEVEL = "2"


def verbose(environ: MutableMapping[str, str] = os.environ) -> bool:
    return environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def tf_log_level(environ: MutableMapping[str, str] = os.environ) -> str:
    """The TF_CPP_MIN_LOG_LEVEL an entry point sets by default, before TensorFlow is imported:
    `os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level())` ("2", or "0" with AEC_TF_VERBOSE)."""
    return "0" if verbose(environ) else QUIET_LEVEL
