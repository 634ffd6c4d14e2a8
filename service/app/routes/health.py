"""Liveness, readiness and Prometheus metrics: open by default (probes and scrapers must reach them
without secrets); AEC_PROBES_REQUIRE_KEY / AEC_METRICS_REQUIRE_KEY put them behind the API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.app.deps import MetricsDep, MetricsKeyDep, ProbeKeyDep, RegistryDep
from service.app.errors import error_response
from service.app.openapi import errors
from service.app.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers", response_model=Health, dependencies=[ProbeKeyDep])
async def healthz() -> Health:
    return Health()


@router.get("/readyz", summary="Readiness: models are loaded and warm", response_model=Ready, responses=errors(503),
            dependencies=[ProbeKeyDep])
async def readyz(registry: RegistryDep) -> Ready | JSONResponse:
    state = registry.state
    if not registry.loaded_once or not state.models:
        # no path here: /readyz is open to anyone who can reach the port (the logs name the directory)
        why = "models are still loading" if not registry.loaded_once else "no model could be loaded (see GET /models and the logs)"
        return error_response(503, "not_ready", why)
    return Ready(models=len(state.models), versions=sum(len(v) for v in state.models.values()))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}, dependencies=[MetricsKeyDep])
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)
