"""bench/load.py's report: per-endpoint (and per-attack) counts and latencies, the server's RSS, its table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from bench.loadlib.images import PIXEL_TOLERANCE

MiB = 1024 * 1024


@dataclass
class EndpointStats:
    requests: int = 0
    errors: int = 0
    server_errors: int = 0
    overloaded: int = 0
    transport: int = 0
    mismatches: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class Report:
    url: str
    model: str
    concurrency: int
    duration_s: float = 0.0
    stats: dict[str, EndpointStats] = field(default_factory=dict)
    rss_start: int | None = None
    rss_end: int | None = None
    rss_max: int | None = None
    first_problems: list[str] = field(default_factory=list)
    max_score_deviation: float = 0.0
    max_level_deviation: int = 0
    reference_decode_vs_recon: int = 0
    images: int = 0
    sizes: list[str] = field(default_factory=list)

    @property
    def total(self) -> EndpointStats:
        total = EndpointStats()
        for s in self.stats.values():
            total.requests += s.requests
            total.errors += s.errors
            total.server_errors += s.server_errors
            total.overloaded += s.overloaded
            total.transport += s.transport
            total.mismatches += s.mismatches
            total.latencies_ms += s.latencies_ms
        return total

    @property
    def ok(self) -> bool:
        """No 5xx but backpressure's 503, no transport failure, no mismatch, and some requests made."""
        total = self.total
        return (total.requests > 0 and total.server_errors == total.overloaded and total.transport == 0
                and total.mismatches == 0 and self.reference_decode_vs_recon <= PIXEL_TOLERANCE)

    def table(self) -> str:
        header = (f"{'endpoint':<22}{'requests':>9}{'errors':>8}{'5xx':>6}{'503':>6}{'mismatch':>10}"
                  f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}")
        rows = [header]
        for name, s in [*self.stats.items(), ("total", self.total)]:
            rate = s.requests / self.duration_s if self.duration_s else 0.0
            rows.append(f"{name:<22}{s.requests:>9}{s.errors:>8}{s.server_errors:>6}{s.overloaded:>6}{s.mismatches:>10}"
                        f"{s.percentile(50):>9.1f}{s.percentile(99):>9.1f}{rate:>8.1f}")
        rss = " ".join(f"{label} {value / MiB:.1f} MiB" for label, value in
                       (("start", self.rss_start), ("end", self.rss_end), ("max", self.rss_max)) if value is not None)
        rows.append(f"server RSS: {rss or 'unknown (no process_resident_memory_bytes in /metrics)'}")
        rows.append(f"{self.duration_s:.1f} s at concurrency {self.concurrency} on {self.url} model {self.model}; "
                    f"{self.images} images ({', '.join(self.sizes)}); largest deviations: score {self.max_score_deviation:.1e} "
                    f"relative, pixels {self.max_level_deviation} level(s)")
        rows.extend(f"  problem: {p}" for p in self.first_problems)
        return "\n".join(rows)

    def to_json(self) -> dict:
        data = asdict(self)
        for name, s in self.stats.items():
            data["stats"][name] = {k: v for k, v in asdict(s).items() if k != "latencies_ms"} | {
                "p50_ms": s.percentile(50), "p99_ms": s.percentile(99)}
        data["ok"] = self.ok
        return data
