"""The model registry: discovers `<models_dir>/<name>/<int version>/`, loads, warms and serves versions.

Loading is all-or-nothing per version: validate the card, load the SavedModel, check its signatures,
read the entropy tables once, then round-trip a golden image (encode → entropy-code → decode must equal
`reconstruct`). Only a version that passes is swapped in, by replacing one immutable state object, so a
request sees either the old set of models or the new one. A broken version is reported (with the
reason) and skipped; whatever served before keeps serving. The newest loaded version is the default.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from contract.card import CARD_FILENAME, ModelCard
from service.inference.errors import ModelNotFound, ModelRequired, NoModelsLoaded, VersionNotFound
from service.inference.golden import golden_roundtrip
from service.inference.loaded import LoadedModel, LoadError, ObserverFactory

__all__ = ["LoadError", "LoadFailure", "LoadedModel", "ModelRegistry", "ModelsDirUnavailable", "RegistryState",
           "ReloadReport", "configure_tensorflow", "serves_any_size"]

log = logging.getLogger(__name__)

SAVED_MODEL_FILENAME = "saved_model.pb"
#: `<models_dir>/DEFAULT`: the store's default model (its first line, a model name), unless AEC_DEFAULT_MODEL is set.
DEFAULT_FILE = "DEFAULT"
#: Why a model is the default: AEC_DEFAULT_MODEL, the store's DEFAULT file, or the first loaded model by name.
DefaultSource = Literal["setting", "store", "first_by_name"]


def serves_any_size(models_dir: Path) -> bool:
    """Whether a version under `models_dir` takes images of any size (a photo codec), from the cards
    alone: read before TensorFlow starts, to choose its thread budget (`Settings.intra_op_threads`). A
    store that cannot be read, or a card that does not parse, counts as none (the registry reports those)."""
    try:
        models = [path for path in Path(models_dir).iterdir() if path.is_dir() and not path.name.startswith(".")]
    except OSError:
        return False
    for model in models:
        try:
            versions = [path for path in model.iterdir() if path.name.isascii() and path.name.isdigit()]
        except OSError:
            continue
        for version in versions:
            try:
                if ModelCard.read(version).input.any_size:
                    return True
            except (OSError, ValueError):
                continue
    return False


class ModelsDirUnavailable(OSError):
    """models_dir is missing or unreadable: a refresh keeps every loaded version instead of unloading."""


def configure_tensorflow(intra_op_threads: int = 0) -> None:
    """Serving defaults: grow GPU memory on demand instead of grabbing it all (tensorflow/serving#249);
    `intra_op_threads` > 0 caps the threads one TF op may use (0 = TF's choice, all cores). A small CPU
    serving small images does better with 1: batches in flight then run side by side instead of
    contending with the event loop for every core (bench/serve.py)."""
    if intra_op_threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
            log.info("TensorFlow ops use up to %d thread(s) each", intra_op_threads)
        except RuntimeError as exc:  # the runtime was already initialised (e.g. by an earlier app in tests)
            log.warning("could not set TF intra-op threads to %d: %s", intra_op_threads, exc)
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError) as exc:  # already initialised: keep going with TF's setting
            log.warning("could not enable memory growth on %s: %s", gpu.name, exc)


@dataclass(frozen=True)
class LoadFailure:
    name: str
    version: int
    path: Path
    error: str
    fingerprint: tuple = ()
    failed_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RegistryState:
    """Immutable snapshot; the registry swaps a whole new one in on every change."""

    models: Mapping[str, Mapping[int, LoadedModel]] = field(default_factory=dict)
    failures: Mapping[tuple[str, int], LoadFailure] = field(default_factory=dict)


@dataclass(frozen=True)
class ReloadReport:
    added: list[tuple[str, int]]
    removed: list[tuple[str, int]]
    failed: list[LoadFailure]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.failed)


class ModelRegistry:
    """Holds the served versions; `refresh()` is both the initial load and every hot reload."""

    def __init__(
        self,
        models_dir: Path,
        *,
        default_model: str | None = None,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
        max_queue: int | None = None,
        max_in_flight: int = 1,
        executor: Executor | None = None,
        effort_executor: Executor | None = None,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.max_in_flight = max_in_flight
        self.default_model = default_model
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_s, max_queue
        self.executor, self.observer_factory = executor, observer_factory
        self.effort_executor = effort_executor
        self._state = RegistryState()
        self._lock = asyncio.Lock()
        self.loaded_once = False
        #: Why models_dir could not be read at the last refresh (None when it could): what is loaded stays.
        self.unavailable: str | None = None
        self.unreadable_models: frozenset[str] = frozenset()
        self._skipped: set[Path] = set()
        #: The model named by `<models_dir>/DEFAULT` at the last refresh (None: no such file, or empty).
        self.store_default: str | None = None

    # ---- reading ---------------------------------------------------------------------------------
    @property
    def state(self) -> RegistryState:
        return self._state

    def default_name(self) -> str | None:
        """The model a request without `?model=` gets (`default_source` says why)."""
        return self.default_choice()[0]

    def default_choice(self) -> tuple[str | None, DefaultSource | None]:
        """(name, source): AEC_DEFAULT_MODEL when set ("setting"); else the model named by the store's
        DEFAULT file when it is loaded ("store"); else the first loaded model by name ("first_by_name"),
        so that adding a model to a store never leaves existing clients without a default."""
        if self.default_model:
            return self.default_model, "setting"
        names = sorted(self._state.models)
        if self.store_default and self.store_default in self._state.models:
            return self.store_default, "store"
        return (names[0], "first_by_name") if names else (None, None)

    def resolve(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        """The model a request asked for: a name (else the default) and a version (else the newest)."""
        state = self._state
        if name is None:
            if not state.models:
                raise NoModelsLoaded(f"no model is loaded from {self.models_dir}; see GET /models")
            name = self.default_name()
            if name is None:  # not reached while a model is loaded: the first by name is the default
                raise ModelRequired("no default model: name one with ?model=")
        versions = state.models.get(name)
        if not versions:
            failed = sorted(v for (n, v) in state.failures if n == name)
            hint = f" (version(s) {failed} failed to load, see GET /models/{name})" if failed else ""
            known = ", ".join(sorted(state.models)) or "none"
            raise ModelNotFound(f"model {name!r} is not loaded{hint}; loaded models: {known}")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            failure = state.failures.get((name, version))
            why = f": it failed to load ({failure.error})" if failure else ""
            raise VersionNotFound(
                f"version {version} of model {name!r} is not loaded{why}; loaded versions: {sorted(versions)}"
            )
        return versions[version]

    # ---- loading ---------------------------------------------------------------------------------
    def scan(self) -> dict[tuple[str, int], Path]:
        """Integer version directories under `<models_dir>/<name>/` (hidden/staging dirs ignored).

        Only ASCII digits name a version (`"²".isdigit()` is true and `int("²")` fails: one such folder
        made every refresh fail); other folders are reported once and skipped. A models_dir that is
        missing or unreadable raises `ModelsDirUnavailable`, so the caller keeps what it serves rather
        than reading "no versions" (an NFS blip or an mv-based swap unloaded everything); a model folder
        that cannot be read is remembered in `unreadable_models`, and its versions stay too."""
        found: dict[tuple[str, int], Path] = {}
        unreadable: set[str] = set()
        try:
            model_dirs = sorted(self.models_dir.iterdir())
        except OSError as exc:
            raise ModelsDirUnavailable(f"models directory {self.models_dir} cannot be read: {_describe(exc)}") from exc
        for model_dir in model_dirs:
            try:
                if not model_dir.is_dir() or model_dir.name.startswith("."):
                    continue
                version_dirs = list(model_dir.iterdir())
            except OSError as exc:
                unreadable.add(model_dir.name)
                self._report_skipped(model_dir, f"cannot be read ({_describe(exc)}); its loaded versions stay")
                continue
            for version_dir in version_dirs:
                name = version_dir.name
                if name.startswith("."):
                    continue
                if not (name.isascii() and name.isdigit()):
                    if version_dir.is_dir():
                        self._report_skipped(version_dir, "is not a version (versions are named by ASCII digits)")
                    continue
                if int(name) >= 1 and version_dir.is_dir():
                    found[(model_dir.name, int(name))] = version_dir
        self.unreadable_models = frozenset(unreadable)
        self.store_default = self._read_store_default({name for name, _ in found} | unreadable)
        return found

    def _read_store_default(self, names: set[str]) -> str | None:
        """The first line of `<models_dir>/DEFAULT` (a model name), if the file is there. A name that is
        not loaded is reported once and the first model by name serves as the default instead."""
        path = self.models_dir / DEFAULT_FILE
        try:
            name = path.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError):
            return None
        if name and name not in names:
            self._report_skipped(path, f"names model {name!r}, which the store does not hold; the first model "
                                       "by name is the default")
        return name or None

    def _report_skipped(self, path: Path, why: str) -> None:
        """Log a skipped folder once (the poll runs every few seconds), not on every refresh."""
        if path not in self._skipped:
            self._skipped.add(path)
            log.warning("skipping %s: it %s", path, why)

    async def refresh(self) -> ReloadReport:
        """Load new version dirs (off the event loop), drop removed ones, swap atomically."""
        async with self._lock:
            state = self._state
            try:
                found = await asyncio.to_thread(self.scan)
            except ModelsDirUnavailable as exc:
                if self.unavailable is None:
                    log.warning("%s; keeping the %d loaded version(s) until it is back", exc,
                                sum(len(v) for v in state.models.values()))
                self.unavailable = str(exc)
                self.loaded_once = True
                return ReloadReport([], [], [])
            if self.unavailable is not None:
                log.info("models directory %s is readable again", self.models_dir)
                self.unavailable = None
            loaded = {(n, v) for n, versions in state.models.items() for v in versions}
            kept = {(n, v) for n, v in loaded if n in self.unreadable_models}  # unreadable, not removed
            removed = sorted(loaded - set(found) - kept)
            failures = {key: f for key, f in state.failures.items() if key in found}
            added: list[tuple[str, int]] = []
            new_failures: list[LoadFailure] = []
            fresh: dict[tuple[str, int], LoadedModel] = {}
            for key in sorted(set(found) - loaded):
                path = found[key]
                fingerprint = await asyncio.to_thread(_fingerprint, path)
                previous = failures.get(key)
                if previous is not None and previous.fingerprint == fingerprint:
                    continue  # same broken files as last time: do not retry every poll
                try:
                    fresh[key] = await asyncio.to_thread(self._load, key[0], key[1], path)
                except Exception as exc:  # noqa: BLE001 -- any reason a version cannot serve is reported
                    failure = LoadFailure(key[0], key[1], path, _describe(exc), fingerprint)
                    failures[key] = failure
                    new_failures.append(failure)
                    log.warning("skipping model %s version %s: %s", key[0], key[1], failure.error)
                else:
                    failures.pop(key, None)
                    added.append(key)
                    log.info("loaded model %s version %s from %s", key[0], key[1], path)
            models: dict[str, dict[int, LoadedModel]] = {}
            for name, versions in state.models.items():
                for version, model in versions.items():
                    if (name, version) not in removed:
                        models.setdefault(name, {})[version] = model
            for (name, version), model in fresh.items():
                models.setdefault(name, {})[version] = model
            self._state = RegistryState(models, failures)
            self.loaded_once = True
            for name, version in removed:
                log.info("unloaded model %s version %s (directory removed)", name, version)
                await state.models[name][version].close()
            return ReloadReport(added, removed, new_failures)

    async def watch(self, interval_s: float, on_report: Callable[[ReloadReport], None] | None = None) -> None:
        """Poll forever (run as a background task); errors are logged, never fatal."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await self.refresh()
                if on_report is not None:
                    on_report(report)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model reload failed; keeping the current models")

    async def close(self) -> None:
        """Close every loaded version as the process shuts down (see LoadedModel.close)."""
        for versions in self._state.models.values():
            for model in versions.values():
                await model.close(shutting_down=True)

    def _load(self, name: str, version: int, path: Path) -> LoadedModel:
        missing = [f for f in (CARD_FILENAME, SAVED_MODEL_FILENAME) if not (path / f).is_file()]
        if missing:
            raise LoadError(f"incomplete version directory {path}: missing {', '.join(missing)}")
        try:
            card = ModelCard.read(path)
        except Exception as exc:
            raise LoadError(f"invalid {CARD_FILENAME}: {_describe(exc)}") from exc
        if (card.name, card.version) != (name, version):
            raise LoadError(f"{CARD_FILENAME} says {card.name} version {card.version} but lives in {name}/{version}")
        try:
            module = tf.saved_model.load(str(path))
        except Exception as exc:
            raise LoadError(f"SavedModel cannot be loaded: {_describe(exc)}") from exc
        signatures = dict(module.signatures)
        required = {"encode", "decode", "reconstruct", "entropy_tables"}
        if card.anomaly is not None:
            required.add("anomaly_score")
        required |= {spec.scale_source for spec in card.latents if spec.coding == "gaussian" and spec.scale_source}
        if card.effort is not None:
            required.add(card.effort.signature)
        if missing_sigs := sorted(required - set(signatures)):
            raise LoadError(f"SavedModel lacks signature(s) {', '.join(missing_sigs)}")
        _check_signatures(card, signatures)
        tables = {key: np.asarray(value.numpy(), dtype=np.float64) for key, value in signatures["entropy_tables"]().items()}
        for spec in card.latents:
            if spec.coding != "categorical":
                continue
            want = (spec.channels, spec.max_symbol - spec.min_symbol + 1)
            if spec.name not in tables or tables[spec.name].shape != want:
                got = tables[spec.name].shape if spec.name in tables else "missing"
                raise LoadError(f"entropy table {spec.name!r} is {got}, the card needs {want}")
        model = LoadedModel(
            card=card,
            path=path,
            signatures=signatures,
            tables=tables,
            max_batch_size=self.max_batch_size,
            max_wait_s=self.max_wait_s,
            max_queue=self.max_queue,
            max_in_flight=self.max_in_flight,
            executor=self.executor,
            effort_executor=self.effort_executor,
            observer_factory=self.observer_factory,
            module=module,
        )
        golden_roundtrip(model)
        return model


def _check_signatures(card: ModelCard, signatures: Mapping[str, Any]) -> None:
    images = signatures["encode"].structured_input_signature[1].get("images")
    if images is None:
        raise LoadError("the encode signature has no 'images' input")
    dims = images.shape.as_list()
    spec = card.input
    want = [None, None, None, spec.channels] if spec.any_size else [None, spec.height, spec.width, spec.channels]
    if len(dims) != 4 or dims[3] != spec.channels or (not spec.any_size and dims[1:3] != want[1:3]):
        raise LoadError(f"encode takes images shaped {dims}, the card describes {want}")
    names = {latent.name for latent in card.latents}
    outputs = set(signatures["encode"].structured_outputs)
    if not names <= outputs:
        raise LoadError(f"encode returns {sorted(outputs)}, the card lists latents {sorted(names)}")
    quality = {"quality"} if card.rate is not None else set()
    decode_inputs = set(signatures["decode"].structured_input_signature[1])
    if decode_inputs != names | quality:
        raise LoadError(f"decode takes {sorted(decode_inputs)}, the card lists latents {sorted(names | quality)}")
    for name in ("encode", "reconstruct"):
        inputs = set(signatures[name].structured_input_signature[1])
        if inputs != {"images"} | quality:
            raise LoadError(f"{name} takes {sorted(inputs)}; the card says {sorted({'images'} | quality)}"
                            + (" (a variable-rate model takes quality)" if quality else ""))
    if card.effort is not None:
        inputs = set(signatures[card.effort.signature].structured_input_signature[1])
        if inputs != {"images", "effort"} | quality:
            raise LoadError(f"{card.effort.signature} takes {sorted(inputs)}; the card says "
                            f"{sorted({'images', 'effort'} | quality)}")
        outputs = set(signatures[card.effort.signature].structured_outputs)
        if not names <= outputs:
            raise LoadError(f"{card.effort.signature} returns {sorted(outputs)}, the card lists latents {sorted(names)}")


def _fingerprint(path: Path) -> tuple:
    """Sizes and mtimes of every file: a failed version is retried only once its files change."""
    try:
        return tuple(
            sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file())
        )
    except OSError:  # files vanishing mid-scan (a copy in progress): never equal, so retried next poll
        return (("unreadable", time.monotonic_ns()),)


def _describe(exc: BaseException) -> str:
    """One line for /models: the exception type and its message, whitespace collapsed, bounded."""
    text = " ".join(str(exc).split())
    return (text if isinstance(exc, LoadError) else f"{type(exc).__name__}: {text}")[:500]
