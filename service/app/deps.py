"""Dependencies as `Annotated` aliases: routes declare what they need, tests override the providers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Query, Request

from service.app.config import Settings
from service.app.metrics import Metrics
from service.inference.errors import Unauthorized
from service.inference.registry import LoadedModel, ModelRegistry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

ModelName = Annotated[
    str | None,
    Query(description="Model name (GET /models); the configured default when omitted.", examples=["mnist-cae"]),
]
ModelVersion = Annotated[
    int | None, Query(ge=1, description="Pin a version; the newest loaded one when omitted.", examples=[1])
]


async def select_model(registry: RegistryDep, model: ModelName = None, version: ModelVersion = None) -> LoadedModel:
    return registry.resolve(model, version)


ModelDep = Annotated[LoadedModel, Depends(select_model)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """When AEC_API_KEYS is set, require `X-API-Key: <key>` or `Authorization: Bearer <key>`."""
    if not settings.api_keys:
        return
    offered = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not offered and auth.lower().startswith("bearer "):
        offered = auth[7:].strip()
    if not any(hmac.compare_digest(offered.encode(), key.encode()) for key in settings.api_keys):
        raise Unauthorized("a valid API key is required (X-API-Key header or Authorization: Bearer)")


async def check_api_key(request: Request, settings: SettingsDep) -> None:
    """`require_api_key` as the routes' dependency. `async def` on purpose, like the providers above:
    FastAPI runs a plain `def` dependency in a worker thread, and those hops (four per request) cost
    more than everything these functions do (bench/serve.py)."""
    require_api_key(request, settings)


ApiKeyDep = Depends(check_api_key)
