"""POST /anomaly-score: score against the model card's calibrated threshold, optional heat map."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from service.app import negotiate, query
from service.app.deps import HotContext, KeyedRoute
from service.app.openapi import BUSY, IMAGE_BODY, errors
from service.app.routes.common import INLINE_JSON_BYTES, for_each, json_answer, model_headers, read_images
from service.app.schemas import AnomalyScore
from service.app.uploads import Upload
from service.inference import anomaly, imaging
from service.inference.heatmap import heatmap_overlay

router = APIRouter(tags=["anomaly"], route_class=KeyedRoute)


@router.post(
    "/anomaly-score",
    summary="Anomaly score per image",
    description=(
        "`{score, threshold, is_anomaly, model, version, ...}` per image (a list for several files). The "
        "threshold comes from the model card (calibrated at export); a model without one answers 409. "
        "`?heatmap=true` adds the per-pixel error as a heat-map overlay (base64 PNG) and `?error_map=true` the raw "
        "per-pixel values, both at the original image size."
    ),
    response_model=AnomalyScore | list[AnomalyScore],
    responses=errors(400, 404, 409, 413, 415, 422, *BUSY),
    openapi_extra={**IMAGE_BODY, "parameters": query.parameters("model", "version", "heatmap", "error_map")},
)
async def anomaly_score(ctx: HotContext) -> Response:
    model, heatmap, error_map, settings = ctx.model(), ctx.query.heatmap, ctx.query.error_map, ctx.settings
    anomaly.require_calibrated(model)  # before reading the body: a clear 409 costs nothing

    async def one(item: tuple[Upload, imaging.SourceImage]) -> AnomalyScore:
        upload, source = item
        result = await anomaly.score(model, source, with_map=heatmap or error_map)
        png = values = None
        pixels = source.height * source.width
        if heatmap and result.error_map is not None:
            overlay = await imaging.off_loop(pixels, heatmap_overlay, source.pixels, result.error_map)
            png = negotiate.b64(await imaging.off_loop(pixels, imaging.encode_image, overlay))
        if error_map and result.error_map is not None:
            values = await imaging.off_loop(pixels, _values, result.error_map)
        assert model.card.anomaly is not None
        return AnomalyScore(
            model=model.name, version=model.version, height=source.height, width=source.width,
            channels=source.channels, size_policy=result.plan.policy, size_action=result.plan.action,
            filename=upload.filename, score=result.score, threshold=result.threshold,
            is_anomaly=result.is_anomaly, normalized_score=result.normalized_score,
            score_kind=model.card.anomaly.score, heatmap=png, error_map=values,
        )

    limit = settings.max_error_map_pixels if error_map else None
    async with read_images(ctx, model, max_image_pixels=limit,
                           why_image_limit="error_map=true answers one JSON number per pixel (AEC_MAX_ERROR_MAP_PIXELS); "
                           "ask for heatmap=true instead, or send images of") as items:
        scored = await for_each(items, one, timeout_s=settings.request_timeout_s)
        results = [r.model_dump(mode="json") for r in scored]
        big = error_map or heatmap and sum(len(r.heatmap or "") for r in scored) > INLINE_JSON_BYTES
        del items, scored
    return await json_answer(results, model_headers(model), big=big)


def _values(error_map: np.ndarray) -> list[list[float]]:
    """The error map as JSON numbers, rounded to 6 decimals (tens of ms for a big map: off the loop)."""
    return np.round(error_map.astype(np.float64), 6).tolist()
