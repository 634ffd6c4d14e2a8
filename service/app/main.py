"""The FastAPI app: `create_app(settings)` wires settings, registry, middleware, errors and routers.

The lifespan loads and warms every model before the app reports ready, keeps the registry on
`app.state`, and runs the hot-reload poller. Routes reach the registry, settings, metrics and pixel
budget only through the providers in `deps` (the hot routes through its `HotContext`), so
`app.dependency_overrides` replaces any of them for GET and POST routes alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.app.budget import PixelBudget
from service.app.config import Settings
from service.app.direct import ServiceApp
from service.app.errors import install_error_handlers
from service.app.logs import flush_logs, setup_logging
from service.app.metrics import Metrics
from service.app.middleware import RequestContextMiddleware, VersionPrefixMiddleware
from service.app.openapi import install_openapi
from service.app.routes import API_ROUTERS, demo
from service.inference.imaging import configure_pillow
from service.inference.registry import ModelRegistry, ReloadReport, configure_tensorflow, serves_any_size

log = logging.getLogger(__name__)

DESCRIPTION = """
Learned image compression and anomaly scoring over REST.

* `POST /encode` image → bitstream, `POST /decode` bitstream → image, `POST /reconstruct` image → image + PSNR,
  `POST /anomaly-score` image → score vs calibrated threshold.
* Images as multipart (`curl -F file=@digit.png`) or a raw body (`--data-binary @digit.png -H 'Content-Type: image/png'`).
* `?model=` and `?version=` pick the model (GET /models lists them); every route is also served under `/v1`.
* Errors: `{"error": {"code": "...", "message": "..."}}`.
"""

#: Response headers a browser page on another origin may read (the figures of the raw-bytes answers).
EXPOSED_HEADERS = [
    "X-Request-ID", "X-Model", "X-Model-Version", "X-Bpp", "X-Bytes", "X-Quality", "X-MSE", "X-PSNR", "X-Original-Width",
    "X-Original-Height", "X-Original-Channels", "X-Size-Policy", "X-Size-Action", "X-MS-SSIM", "X-Search-Encodes",
    "X-Effort",
    "Retry-After",
]


def freeze_heap() -> None:
    """Collect once, then move every object alive now out of the cyclic GC's reach (`gc.freeze`).

    Why: with TensorFlow and the models loaded the heap holds ~470,000 tracked objects, and a full
    collection of them takes 350-490 ms with the GIL held. CPython runs one whenever enough allocations
    pile up, so under load the event loop stalled that long every so often (/healthz at 300 ms amid
    10 ms answers). What is loaded at start lives as long as the process; frozen, it is never scanned
    again, and a collection scans only what requests allocate. After a reload that added or removed
    versions this runs again (one such pause per model change), so a removed version's cycles are
    collected rather than frozen for good.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> ServiceApp:
    settings = settings or Settings()
    setup_logging(settings.log_format, settings.log_level)
    configure_pillow(settings.max_pixels)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_tensorflow(settings.intra_op_threads(serves_any_size(settings.models_dir)))
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        effort_executor = ThreadPoolExecutor(1, thread_name_prefix="effort")  # refinements: one at a time

        registry = ModelRegistry(
            settings.models_dir,
            default_model=settings.default_model,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            max_in_flight=settings.batches_in_flight,
            executor=executor,
            effort_executor=effort_executor,
            observer_factory=metrics.batch_observer,
        )
        app.state.registry = registry

        def on_report(report: ReloadReport) -> None:
            metrics.record_reload(report, registry.state)
            if report.added or report.removed:
                freeze_heap()

        try:
            on_report(await registry.refresh())
        except Exception:  # an unreadable models_dir must not keep the process from starting
            log.exception("initial model load failed")
        freeze_heap()
        state = registry.state
        log.info(
            "serving %d model version(s) from %s; %d failed",
            sum(len(v) for v in state.models.values()), settings.models_dir, len(state.failures),
        )
        watcher = None
        if settings.reload_interval_s > 0:
            watcher = asyncio.create_task(registry.watch(settings.reload_interval_s, on_report), name="model-reload")
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await registry.close()
            executor.shutdown(wait=True, cancel_futures=True)
            effort_executor.shutdown(wait=True, cancel_futures=True)  # the one running refinement finishes
            flush_logs()  # the last requests' lines are written before the process goes

    app = ServiceApp(
        title="aecodec",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # FastAPI's own OpenTelemetry hooks look up the global providers on every request; the service
        # reports through Prometheus (/metrics), so they are on only when an operator asks for them.
        telemetry=None if settings.otel_telemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.pixel_budget = PixelBudget(settings.max_pixels_in_flight, metrics.pixels_in_flight.set)
    install_error_handlers(app)
    install_openapi(app, settings)
    app.add_middleware(VersionPrefixMiddleware)  # innermost: /v1/... routes like /...
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    if settings.cors_origins:  # outermost: preflights are answered before auth, errors carry CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Accept", "Authorization", "X-API-Key", "X-Request-ID"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    for router in API_ROUTERS:
        app.include_router(router)
    app.include_router(demo.router)
    app.mount("/static", StaticFiles(directory=demo.STATIC_DIR), name="static")
    if not settings.cors_origins:  # with CORS on, every request needs its middleware
        app.enable_direct_routes(API_ROUTERS, metrics)
    return app
