"""GET /models, /models/{name}, /models/{name}/versions/{version}: what is served, and what failed."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Path

from service.app.deps import KeyedRoute, RegistryDep, SettingsDep
from service.app.openapi import errors
from service.app.schemas import ModelDetail, ModelList, ModelSummary, VersionDetail, VersionStatus
from service.inference.errors import ModelNotFound, VersionNotFound
from service.inference.registry import LoadedModel, LoadFailure, ModelRegistry, RegistryState

router = APIRouter(prefix="/models", tags=["models"], route_class=KeyedRoute)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(entry: LoadedModel | LoadFailure, with_card: bool = False, effort_on: bool = True) -> VersionDetail:
    """One version's status; `effort` is the range `?effort=` takes here, so none while the server has
    encoder effort turned off (AEC_EFFORT_MAX_PIXELS=0), though the card (with_card) still has it."""
    if isinstance(entry, LoadFailure):
        return VersionDetail(version=entry.version, state="failed", error=entry.error, since=_iso(entry.failed_at))
    card = entry.card
    return VersionDetail(
        version=card.version, state="available", architecture=card.architecture, input=card.input,
        anomaly_threshold=card.anomaly.threshold if card.anomaly else None, rate=card.rate,
        effort=card.effort if effort_on else None,
        normal_classes=card.anomaly.normal_classes if card.anomaly else None, metrics=card.metrics,
        since=_iso(entry.loaded_at), card=card if with_card else None,
    )


def _summary(registry: ModelRegistry, state: RegistryState, name: str, detail: bool = False,
             effort_on: bool = True) -> ModelSummary:
    loaded = state.models.get(name, {})
    entries: dict[int, LoadedModel | LoadFailure] = {v: f for (n, v), f in state.failures.items() if n == name}
    entries.update(loaded)
    statuses = [_status(entries[v], with_card=detail, effort_on=effort_on) for v in sorted(entries, reverse=True)]
    common = {
        "name": name,
        "is_default": registry.default_name() == name,
        "default_version": max(loaded) if loaded else None,
    }
    if detail:
        return ModelDetail(**common, versions=statuses)
    return ModelSummary(
        **common, versions=[VersionStatus.model_validate(s.model_dump(exclude={"card"})) for s in statuses]
    )


def _names(state: RegistryState) -> list[str]:
    return sorted(set(state.models) | {name for name, _ in state.failures})


@router.get("", summary="List models and versions", response_model=ModelList)
async def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelList:
    state = registry.state
    name, source = registry.default_choice()
    return ModelList(
        default_model=name, default_source=source,
        models=[_summary(registry, state, n, effort_on=settings.effort_on) for n in _names(state)],
    )


@router.get("/{name}", summary="One model: its versions and their cards", response_model=ModelDetail,
            responses=errors(404))
async def get_model(registry: RegistryDep, settings: SettingsDep, name: str = Path(examples=["mnist"])) -> ModelSummary:
    state = registry.state
    if name not in _names(state):
        raise ModelNotFound(f"model {name!r} is not loaded; loaded: {', '.join(sorted(state.models)) or 'none'}")
    return _summary(registry, state, name, detail=True, effort_on=settings.effort_on)


@router.get("/{name}/versions/{version}", summary="One version: status and full model card",
            response_model=VersionDetail, responses=errors(404))
async def get_version(registry: RegistryDep, settings: SettingsDep, name: str, version: int) -> VersionDetail:
    state = registry.state
    entry = state.models.get(name, {}).get(version) or state.failures.get((name, version))
    if entry is None:
        if name not in _names(state):
            raise ModelNotFound(f"model {name!r} is not loaded")
        raise VersionNotFound(f"model {name!r} has no version {version}")
    return _status(entry, with_card=True, effort_on=settings.effort_on)
