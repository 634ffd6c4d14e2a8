"""One router per concern; `api_router` collects them (also served under /v1 by VersionPrefixMiddleware)."""

from fastapi import APIRouter

from service.app.routes import anomaly, codec, health, models

api_router = APIRouter()
for _module in (codec, anomaly, models, health):
    api_router.include_router(_module.router)
