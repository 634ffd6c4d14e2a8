"""Hot reload on a live server: new versions appear and serve, broken ones are reported and skipped,
removed ones go away, and the old version keeps serving throughout."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import LiveServer, assert_error, live_server, to_bytes

from contract.bitstream import Bitstream


@pytest.fixture(scope="module")
def reload_store(model_store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("reload_store")
    shutil.copytree(model_store.path / "tiny", store / "tiny")
    return store


@pytest.fixture(scope="module")
def reloading(reload_store: Path) -> Iterator[LiveServer]:
    with live_server(models_dir=reload_store, reload_interval_s=0.2, log_level="WARNING") as srv:
        yield srv


def publish(store: Path, name: str, version: int, source: Path, mutate: Callable[[Path], None] | None = None) -> None:
    """Copy a version dir, rewrite its card for the new version, then rename into place (like export)."""
    staging = store / name / f".staging-{version}"
    shutil.copytree(source, staging)
    card = json.loads((staging / "model.json").read_text())
    card.update(name=name, version=version)
    (staging / "model.json").write_text(json.dumps(card))
    if mutate is not None:
        mutate(staging)
    os.replace(staging, store / name / str(version))


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached before the timeout")


def versions(client: httpx.Client, name: str = "tiny") -> dict[int, dict]:
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    return {v["version"]: v for v in models.get(name, {"versions": []})["versions"]}


def test_hot_reload(reloading: LiveServer, reload_store: Path, model_store) -> None:
    digit = to_bytes(model_store.normal[0])
    with httpx.Client(base_url=reloading.url, timeout=30) as client:
        assert set(versions(client)) == {1}
        assert client.post("/encode", content=digit).headers["x-model-version"] == "1"

        # A new version appears: loaded in the background, then the default.
        publish(reload_store, "tiny", 2, reload_store / "tiny" / "1")
        wait_for(lambda: versions(client).get(2, {}).get("state") == "available")
        encoded = client.post("/encode", content=digit)
        assert encoded.headers["x-model-version"] == "2"
        assert Bitstream.from_bytes(encoded.content).version == 2
        assert client.post("/decode", content=encoded.content).headers["x-model-version"] == "2"
        assert client.post("/encode?version=1", content=digit).headers["x-model-version"] == "1"

        # A broken version (garbage SavedModel) is reported with its reason; v2 keeps serving.
        publish(reload_store, "tiny", 3, reload_store / "tiny" / "1",
                mutate=lambda d: (d / "saved_model.pb").write_bytes(b"not a saved model"))
        wait_for(lambda: versions(client).get(3, {}).get("state") == "failed")
        failed = versions(client)[3]
        assert "SavedModel" in failed["error"]
        assert client.get("/models").json()["models"][0]["default_version"] == 2
        assert client.post("/encode", content=digit).headers["x-model-version"] == "2"
        body = assert_error(client.post("/encode?version=3", content=digit), 404, "version_not_found")
        assert "failed to load" in body["error"]["message"]
        assert client.get("/readyz").status_code == 200

        # A card that does not validate is reported too.
        publish(reload_store, "tiny", 4, reload_store / "tiny" / "1",
                mutate=lambda d: (d / "model.json").write_text('{"name": "tiny", "version": 4}'))
        wait_for(lambda: versions(client).get(4, {}).get("state") == "failed")
        assert "model.json" in versions(client)[4]["error"]

        # Removing a version directory unloads it; the previous one is the default again.
        shutil.rmtree(reload_store / "tiny" / "2")
        wait_for(lambda: 2 not in versions(client))
        assert client.post("/encode", content=digit).headers["x-model-version"] == "1"

        metrics = client.get("/metrics").text
        assert "aec_model_load_failures_total" in metrics and "aec_model_versions_loaded 1.0" in metrics
