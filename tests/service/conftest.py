"""Service fixtures: one live server over the session's model store, and an httpx client for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# pytest runs with --import-mode=importlib, which puts no test directory on sys.path: add ours so the
# test modules can share `service_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_helpers import MAX_PIXELS, MAX_UPLOAD, LiveServer, live_server


@pytest.fixture(scope="session")
def server(model_store) -> Iterator[LiveServer]:
    """The main server over the fixture store (no hot reload: the store never changes under it)."""
    with live_server(
        models_dir=model_store.path,
        default_model=model_store.tiny,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        max_files=8,
        max_batch_size=8,
        max_wait_ms=20,
        reload_interval_s=0,
        log_level="WARNING",
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
