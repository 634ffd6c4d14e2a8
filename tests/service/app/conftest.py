"""Fixtures of the app tests: a live server over the shipped `natural` codec next to the fixture `tiny`.

`photo_server` serves a store of links: `natural` (its newest version in models_store/, variable rate,
calibrated) and the session store's `tiny` (single rate, 28×28 grey), so one server has both kinds of
model (the demo page switches between them; /compare is checked on the real codec).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def newest_natural() -> Path:
    folder = ROOT / "models_store" / "natural"
    return max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="session")
def photo_store(tmp_path_factory: pytest.TempPathFactory, model_store) -> Path:
    store = tmp_path_factory.mktemp("photo_store")
    version = newest_natural()
    (store / "natural").mkdir()
    (store / "natural" / version.name).symlink_to(version, target_is_directory=True)
    (store / model_store.tiny).symlink_to(model_store.path / model_store.tiny, target_is_directory=True)
    return store


@pytest.fixture(scope="session")
def photo_server(photo_store: Path) -> Iterator:
    from service_helpers import live_server

    with live_server(models_dir=photo_store, default_model="natural", reload_interval_s=0, max_files=4,
                     log_level="WARNING") as srv:
        yield srv
