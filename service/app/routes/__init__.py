"""One router per concern; `api_router` collects them (mounted at / and again under /v1)."""

from fastapi import APIRouter

from service.app.routes import anomaly, codec, health, models

api_router = APIRouter()
for _module in (codec, anomaly, models, health):
    api_router.include_router(_module.router)
