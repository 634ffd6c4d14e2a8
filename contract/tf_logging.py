"""TensorFlow's start-up noise, quiet by default in every entry point (`python -m service`, `python -m
training`, the bench scripts): its C++ log lines at import (cpu_feature_guard's "This TensorFlow binary is
optimized to use available CPU instructions...", oneDNN's "oneDNN custom operations are on...") and other
info and warning lines, which say nothing about this project's work. Errors still print.

`AEC_TF_VERBOSE=1` (or true/yes/on) asks for them back; an explicit TF_CPP_MIN_LOG_LEVEL always wins.
Entry points call `quiet_tensorflow()` before TensorFlow is imported (the level is read once, at import).

TF_CPP_MIN_LOG_LEVEL alone is not enough on every CPU: where oneDNN's custom operations are on by default
(CPUs with AVX512-VNNI/BF16 or AMX), TensorFlow 2.21 announces them through absl before absl's logging
is initialised, and those lines ("WARNING: All log messages before absl::InitializeLog() ...", "I0000 ...
port.cc:153] oneDNN custom operations are on ...") ignore the level. So `quiet_tensorflow` also holds
back the process's stderr (the file descriptor: the lines come from C++) while the `tensorflow` package
itself is imported, then writes everything it caught back except those lines. Only absl's own prefixes are
dropped: Python warnings and errors of that import come through, just after it. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping

VERBOSE_ENV = "AEC_TF_VERBOSE"
#: TF_CPP_MIN_LOG_LEVEL when quiet: 2 hides INFO and WARNING, keeps ERROR and FATAL.
QUIET_LEVEL = "2"


def verbose(environ: MutableMapping[str, str] = os.environ) -> bool:
    return environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def tf_log_level(environ: MutableMapping[str, str] = os.environ) -> str:
    """The TF_CPP_MIN_LOG_LEVEL an entry point sets by default, before TensorFlow is imported:
    `os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level())` ("2", or "0" with AEC_TF_VERBOSE)."""
    return "0" if verbose(environ) else QUIET_LEVEL


#: absl's lines before its logging is initialised: its notice, and INFO (I) / WARNING (W) lines
_ABSL_NOTICE = re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?$")
_ABSL_LINE = {"I": re.compile(rb"^I\d{4} \d\d:\d\d:"), "W": re.compile(rb"^W\d{4} \d\d:\d\d:")}


def quiet_tensorflow(environ: MutableMapping[str, str] = os.environ) -> None:
    """`TF_CPP_MIN_LOG_LEVEL` by default (see `tf_log_level`), and, where that level hides INFO lines,
    absl's pre-initialisation lines held back while `tensorflow` is first imported (module docstring).
    Call before TensorFlow is imported; a second call changes nothing."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level(environ))
    try:
        level = int(environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        return
    if environ is not os.environ or level < 1 or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport(level))


def dropped(line: bytes, level: int) -> bool:
    """Whether `line` (of stderr, while TensorFlow is imported) is absl noise that `level` hides."""
    if level < 1:
        return False
    if _ABSL_NOTICE.match(line) or _ABSL_LINE["I"].match(line):
        return True
    return level >= 2 and bool(_ABSL_LINE["W"].match(line))


@contextlib.contextmanager
def _stderr_held_back(level: int) -> Iterator[None]:
    """fd 2 into a temporary file for the block; afterwards, what it caught back to fd 2, less absl noise."""
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = b"".join(line for line in caught.read().splitlines(keepends=True)
                            if not dropped(line.rstrip(b"\n"), level))
            if kept:
                os.write(2, kept)


class _QuietLoader(importlib.abc.Loader):
    """The `tensorflow` package's own loader, its execution inside `_stderr_held_back`."""

    def __init__(self, inner: importlib.abc.Loader, level: int) -> None:
        self._inner, self._level = inner, level

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        module.__loader__ = self._inner  # what the module reports is its real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        with _stderr_held_back(self._level):
            self._inner.exec_module(module)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, as the path finder would, and wraps its loader; then leaves sys.meta_path."""

    def __init__(self, level: int) -> None:
        self._level = level

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self._level)
        return spec
