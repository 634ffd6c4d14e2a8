"""Settings from the environment, and the registry on its own (resolution rules, load failures)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from service_helpers import assert_error, live_server

from service.app.config import Settings
from service.app.deps import get_registry
from service.app.logs import BufferedWriter, BufferHandler, JsonFormatter, RequestIdFilter, request_id_var
from service.inference.errors import ModelNotFound, NoModelsLoaded, VersionNotFound
from service.inference.registry import ModelRegistry


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEC_MODELS_DIR", "/srv/models")
    monkeypatch.setenv("AEC_DEFAULT_MODEL", "mnist-cae")
    monkeypatch.setenv("AEC_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("AEC_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("AEC_API_KEYS", "k1, k2")
    monkeypatch.setenv("AEC_LOG_FORMAT", "json")
    monkeypatch.setenv("AEC_LOG_LEVEL", "debug")
    settings = Settings(_env_file=None)
    assert settings.models_dir == Path("/srv/models") and settings.default_model == "mnist-cae"
    assert (settings.max_batch_size, settings.max_wait_ms) == (32, 2.5)
    assert settings.api_keys == ["k1", "k2"] and settings.log_format == "json" and settings.log_level == "DEBUG"


def test_json_logs_carry_the_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("test.jsonlogs")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("req-42")
    try:
        logger.warning("hello %s", "there", extra={"model": "tiny"})
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "hello there" and line["request_id"] == "req-42" and line["model"] == "tiny"
    assert line["level"] == "WARNING" and line["ts"].endswith("Z")


def test_buffered_log_writer_keeps_order_ids_and_tracebacks() -> None:
    """Records reach the stream from the writer thread: in order, with the request id of the moment
    they were logged (the context changes before they are written), tracebacks rendered, none lost."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(JsonFormatter())
    writer = BufferedWriter(target, interval=0.01)
    handler = BufferHandler(writer)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("test.bufferedlogs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = request_id_var.set("first")
        logger.warning("line %d", 0)
        request_id_var.reset(token)
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:  # written without stop()
            time.sleep(0.01)
        assert json.loads(stream.getvalue())["request_id"] == "first"
        for i in range(1, 500):
            token = request_id_var.set(f"req-{i}")
            logger.warning("line %d", i)
            request_id_var.reset(token)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    finally:
        writer.stop()
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines[:500]] == [f"line {i}" for i in range(500)]
    assert [line["request_id"] for line in lines[1:500]] == [f"req-{i}" for i in range(1, 500)]
    assert lines[-1]["message"] == "failed" and "RuntimeError: boom" in lines[-1]["exc"]


def test_settings_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AEC_MODELS_DIR", "AEC_DEFAULT_MODEL", "AEC_MAX_BATCH_SIZE"):
        monkeypatch.delenv(key, raising=False)
    defaults = Settings(_env_file=None)
    assert defaults.models_dir == Path("models_store") and defaults.default_model is None
    monkeypatch.setenv("AEC_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)
    monkeypatch.setenv("AEC_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("AEC_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


@pytest.fixture(scope="module")
def registry_store(model_store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny/1 and tiny-reject/1, plus a version whose card names the wrong directory."""
    store = tmp_path_factory.mktemp("registry_store")
    for name in ("tiny", "tiny-reject"):
        shutil.copytree(model_store.path / name, store / name)
    shutil.copytree(model_store.path / "tiny" / "1", store / "tiny" / "5")  # card still says version 1
    (store / "tiny" / "6").mkdir()  # incomplete: nothing in it yet
    (store / "tiny" / ".staging-7").mkdir()  # hidden: ignored
    return store


def test_registry_resolution_and_failures(registry_store: Path) -> None:
    async def main():
        registry = ModelRegistry(registry_store)
        report = await registry.refresh()
        try:
            assert sorted(report.added) == [("tiny", 1), ("tiny-reject", 1)]
            failures = {(f.name, f.version): f.error for f in report.failed}
            assert "says tiny version 1" in failures[("tiny", 5)]
            assert "missing model.json, saved_model.pb" in failures[("tiny", 6)]
            # two models, no default configured: the first by name, so a store growing never breaks clients
            assert registry.resolve().name == "tiny" and registry.default_choice() == ("tiny", "first_by_name")
            assert registry.resolve("tiny").version == 1
            with pytest.raises(VersionNotFound, match="failed to load"):
                registry.resolve("tiny", 5)
            with pytest.raises(ModelNotFound):
                registry.resolve("ghost")
            (registry_store / "DEFAULT").write_text("tiny-reject\n")  # the store names its default
            await registry.refresh()
            assert registry.resolve().name == "tiny-reject" and registry.default_choice()[1] == "store"
            (registry_store / "DEFAULT").write_text("ghost\n")  # a model the store does not hold: first by name
            await registry.refresh()
            assert registry.default_choice() == ("tiny", "first_by_name")
            (registry_store / "DEFAULT").unlink()
            registry.default_model = "tiny-reject"  # AEC_DEFAULT_MODEL wins over everything
            assert registry.resolve().name == "tiny-reject" and registry.default_choice()[1] == "setting"
            # Unchanged broken dirs are not retried on every poll; a fixed one is.
            again = await registry.refresh()
            assert not again.changed
            card = json.loads((registry_store / "tiny" / "5" / "model.json").read_text())
            card["version"] = 5
            (registry_store / "tiny" / "5" / "model.json").write_text(json.dumps(card))
            fixed = await registry.refresh()
            assert fixed.added == [("tiny", 5)] and registry.resolve("tiny").version == 5
        finally:
            await registry.close()

    asyncio.run(main())


def test_empty_store_not_ready_and_api_keys(tmp_path: Path) -> None:
    with (
        live_server(probe="/healthz", models_dir=tmp_path, api_keys=["s3cret"], reload_interval_s=0) as srv,
        httpx.Client(base_url=srv.url) as client,
    ):
        assert client.get("/healthz").status_code == 200  # probes need no key
        assert_error(client.get("/readyz"), 503, "not_ready")
        assert_error(client.post("/encode", content=b"x"), 401, "unauthorized")
        assert_error(client.get("/models", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert client.get("/models", headers={"X-API-Key": "s3cret"}).json()["models"] == []
        authorised = client.post("/encode", content=b"x", headers={"Authorization": "Bearer s3cret"})
        assert_error(authorised, 503, "no_models_loaded")

        def broken_registry() -> ModelRegistry:
            raise RuntimeError("a bug")

        srv.app.dependency_overrides[get_registry] = broken_registry  # the seam tests can override
        bug = client.get("/models", headers={"X-API-Key": "s3cret", "X-Request-ID": "bug-1"})
        body = assert_error(bug, 500, "internal_error")
        assert "bug-1" in body["error"]["message"] and bug.headers["x-request-id"] == "bug-1"
        srv.app.dependency_overrides.clear()
    with pytest.raises(NoModelsLoaded):
        ModelRegistry(tmp_path).resolve()


@pytest.mark.parametrize("cores, in_flight, setting, any_size, expected", [
    (2, 2, 0, False, 1), (16, 2, 0, False, 8), (1, 2, 0, False, 1), (8, 1, 0, False, 8), (16, 2, 3, False, 3),
    (2, 2, 0, True, 2), (16, 2, 0, True, 16), (16, 2, 3, True, 3),
])
def test_tf_threads_are_every_core_for_photos_else_split_among_batches_in_flight(
        monkeypatch, cores, in_flight, setting, any_size, expected) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    settings = Settings(_env_file=None, batches_in_flight=in_flight, tf_intra_op_threads=setting)
    assert settings.intra_op_threads(any_size) == expected


def test_a_store_serves_any_size_when_one_card_says_so(tmp_path) -> None:
    """Read from the cards alone (no TensorFlow): the shipped mnist card is fixed-size, natural's takes
    any size; files beside the models, hidden folders, folders not named by digits, versions without a
    card, broken cards and a missing store count as none."""
    from service.inference.registry import serves_any_size

    shipped = Path(__file__).resolve().parents[3] / "models_store"
    digits = (shipped / "mnist" / "1" / "model.json").read_text()
    photos = (shipped / "natural" / "11" / "model.json").read_text()

    def card(where: str, text: str) -> None:
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "model.json").write_text(text)

    (tmp_path / "DEFAULT").write_text("mnist\n")  # files beside the models, as in models_store
    card("mnist/1", digits)
    (tmp_path / "mnist" / "NOTES").write_text("a file in a model's folder")
    card("broken/1", "{not json")
    (tmp_path / "empty" / "1").mkdir(parents=True)
    card("natural/.2", photos)
    card("natural/v3", photos)
    assert not serves_any_size(tmp_path)
    assert not serves_any_size(tmp_path / "missing")
    card("natural/4", photos)
    assert serves_any_size(tmp_path)
    assert serves_any_size(shipped)
