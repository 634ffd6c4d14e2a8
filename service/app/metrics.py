"""Prometheus metrics, in a registry per app (so several apps in one process, as in tests, never clash).

Batching is measured where it happens: queue wait (time an item waited for its batch to start) is kept
apart from compute (the TensorFlow call), so a wait budget that adds latency shows up as such.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from service.inference.batcher import BatchObserver
from service.inference.registry import RegistryState, ReloadReport

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aec_requests", "HTTP requests by endpoint, model and status.", ["endpoint", "model", "status"], registry=r
        )
        self.in_flight = Gauge(
            "aec_requests_in_flight", "HTTP requests being served (this one included); drains to 0 on shutdown.",
            registry=r,
        )
        self.pixels_in_flight = Gauge(
            "aec_pixels_in_flight", "Decoded pixels held by requests being served (AEC_MAX_PIXELS_IN_FLIGHT bounds it).",
            registry=r,
        )
        self.latency = Histogram(
            "aec_request_duration_seconds", "HTTP request latency.", ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r
        )
        labels = ["model", "version", "signature"]
        self.batch_size = Histogram(
            "aec_batch_size", "Items per TensorFlow call.", labels, buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "aec_batch_queue_wait_seconds", "Time an item waited before its batch ran.", labels,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.compute = Histogram(
            "aec_batch_compute_seconds", "Duration of one batched TensorFlow call.", labels,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.bpp = Histogram(
            "aec_encode_bpp", "Bits per pixel of produced bitstreams.", ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16), registry=r,
        )
        self.versions_loaded = Gauge("aec_model_versions_loaded", "Model versions currently served.", registry=r)
        self.versions_failed = Gauge("aec_model_versions_failed", "Version dirs that failed to load.", registry=r)
        self.load_failures = Counter("aec_model_load_failures", "Failed version loads.", ["model"], registry=r)
        # process_resident_memory_bytes & co.: RSS under load is what the soak test (bench/load.py) watches.
        ProcessCollector(registry=r)

    def batch_observer(self, model: str, version: int, signature: str) -> BatchObserver:
        labels = (model, str(version), signature)
        size, wait, compute = self.batch_size.labels(*labels), self.queue_wait.labels(*labels), self.compute.labels(*labels)

        def observe(batch_size: int, waits: list[float], compute_s: float) -> None:
            size.observe(batch_size)
            for seconds in waits:
                wait.observe(seconds)
            compute.observe(compute_s)

        return observe

    def record_reload(self, report: ReloadReport, state: RegistryState) -> None:
        for failure in report.failed:
            self.load_failures.labels(failure.name).inc()
        self.versions_loaded.set(sum(len(v) for v in state.models.values()))
        self.versions_failed.set(len(state.failures))

    def render(self) -> bytes:
        return generate_latest(self.registry)
