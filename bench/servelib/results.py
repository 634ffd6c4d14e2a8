"""bench/serve.py's results: one cell per (endpoint, concurrency, client) against the service, one row per
in-process measurement, the report of a run and its table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Cell:
    """One (endpoint, concurrency) measurement against the service."""

    endpoint: str
    concurrency: int
    seconds: float
    images: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_batch: float | None = None
    client: str = "httpx"
    client_cpu: float | None = None  # cores busy in the client process during the cell
    server_cpu: float | None = None  # cores busy in the server process (None with --url)
    error_samples: list[str] = field(default_factory=list)

    @property
    def img_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_ms_per_image(self) -> float | None:
        """Server CPU per answered image: less sensitive to other jobs on the machine than img/s."""
        if self.server_cpu is None or not self.images:
            return None
        return self.server_cpu * 1000 / self.img_s


@dataclass
class InProcess:
    """One in-process measurement: `what` at `batch`, in images per second."""

    what: str
    batch: int
    img_s: float
    ms_per_batch: float
    cpu_ms_per_image: float  # process CPU (all threads) per image: comparable to the server's srv ms/img


@dataclass
class Report:
    model: str
    version_dir: str | None
    max_batch_size: int
    max_wait_ms: float | None
    duration: float
    cpu_count: int
    payload_bytes: int
    inprocess: list[InProcess]
    cells: list[Cell]
    command: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        for cell, row in zip(self.cells, out["cells"]):
            row["img_s"] = cell.img_s
            row["server_cpu_ms_per_image"] = cell.server_cpu_ms_per_image
        out["ratios"] = ratios(self)
        return out


def ratios(report: Report) -> list[dict]:
    """service img/s over in-process img/s of the same kind: batch 1, the batcher's max batch, the best."""
    out = []
    kinds = {"reconstruct": "reconstruct", "bare": "reconstruct", "encode": "encode+entropy"}
    for cell in report.cells:
        rows = [r for r in report.inprocess if r.what == kinds.get(cell.endpoint)]  # none for the floor
        if not rows:
            continue
        refs = {f"b{r.batch}": r.img_s for r in rows}
        out.append({"endpoint": cell.endpoint, "concurrency": cell.concurrency, "client": cell.client,
                    **{ref: cell.img_s / v for ref, v in refs.items() if v > 0}})
    return out


def format_report(report: Report) -> str:
    header = (
        f"model {report.model} ({report.version_dir or 'remote'}), payload PNG {report.payload_bytes} B, "
        f"server max_batch_size={report.max_batch_size} max_wait_ms={report.max_wait_ms}, "
        f"{report.duration:g} s per cell, {report.cpu_count} CPU cores (client and server share them)"
    )
    columns = (
        f"{'endpoint':<13} {'client':<6} {'conc':>5} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'batch':>6} {'cpu cli':>7} {'cpu srv':>7} {'srv ms/img':>10}"
    )
    lines = [header, "", columns]

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for c in report.cells:
        lines.append(
            f"/{c.endpoint:<12} {c.client:<6} {c.concurrency:>5} {c.img_s:>9.1f} {c.p50_ms:>8.2f} {c.p99_ms:>8.2f} {c.errors:>6} "
            f"{fmt(c.mean_batch, '.1f'):>6} {fmt(c.client_cpu, '.2f'):>7} {fmt(c.server_cpu, '.2f'):>7} "
            f"{fmt(c.server_cpu_ms_per_image, '.2f'):>10}"
        )
    if report.inprocess:
        lines += ["", f"{'in-process':<17} {'batch':>5} {'img/s':>9} {'ms/batch':>9} {'cpu ms/img':>10}"]
        for r in report.inprocess:
            lines.append(f"{r.what:<17} {r.batch:>5} {r.img_s:>9.1f} {r.ms_per_batch:>9.2f} {r.cpu_ms_per_image:>10.2f}")
        lines.append("")
        for ratio in ratios(report):
            refs = "  ".join(f"{k}: {v:.2f}" for k, v in ratio.items() if k.startswith("b"))
            lines.append(f"service/in-process  /{ratio['endpoint']:<12} {ratio['client']:<6} c={ratio['concurrency']:<3} {refs}")
    for c in report.cells:
        for sample in c.error_samples:
            lines.append(f"error sample /{c.endpoint} {c.client} c={c.concurrency}: {sample}")
    return "\n".join(lines)
