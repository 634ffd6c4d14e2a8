"""The service as a real process (`python -m service`) on a free loopback port, for benches and tests.

    with server_process(models_dir=store, default_model="mnist") as server:
        httpx.get(f"{server.url}/readyz")

Each keyword setting becomes `AEC_<NAME>=value` (the only AEC_ variables the child sees: the caller's
own are dropped, so a run is configured by its arguments alone); `env` adds raw variables last. The
server logs to a file (in `log_dir`, kept; else a temporary one, removed at the end), whose tail comes
with the error when it exits or is not ready in time. It is ready when /readyz answers 200, and stopped
with SIGTERM (graceful: in-flight requests drain), then killed if it has not exited within `stop_timeout`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from contract.tf_logging import VERBOSE_ENV, tf_log_level

ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """A started server (`popen`), or one running elsewhere (`popen` None: only `url` means anything)."""

    def __init__(self, url: str, popen: subprocess.Popen | None = None, log_path: Path | None = None) -> None:
        self.url, self.popen, self.log_path = url, popen, log_path

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server process (all its threads) so far, from /proc."""
        if self.popen is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        return _proc_status_kb(self.pid, "VmRSS") * 1024

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM (the peak RSS) so it measures from now; False where the kernel refuses."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_rss_bytes(self) -> int:
        return _proc_status_kb(self.pid, "VmHWM") * 1024

    def log(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """The server's last log lines, without the access lines of the readiness polls."""
        return "\n".join([line for line in self.log().splitlines() if "GET /readyz" not in line][-lines:])


def _proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(port: int, settings: Mapping[str, object], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours without AEC_ variables, then the settings, then `env`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("AEC_") or k == VERBOSE_ENV}
    out |= {f"AEC_{k.upper()}": str(v) for k, v in settings.items()}
    out |= {"AEC_HOST": "127.0.0.1", "AEC_PORT": str(port),
            "TF_CPP_MIN_LOG_LEVEL": out.get("TF_CPP_MIN_LOG_LEVEL", tf_log_level(out)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH")]))}
    return out | dict(env or {})


@contextlib.contextmanager
def server_process(log_dir: Path | None = None, timeout: float = 180.0, *, env: Mapping[str, str] | None = None,
                   stop_timeout: float = 30.0, module: str = "service", **settings: object) -> Iterator[ServerProcess]:
    """Start `python -m <module>` (the service, or bench.servelib.floor) with AEC_<NAME>=value for each
    setting; yield once /readyz says 200."""
    port = free_port()
    if log_dir is None:
        fd, name = tempfile.mkstemp(prefix="aec-server-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    else:
        log_path = Path(log_dir) / f"server-{port}.log"
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=server_env(port, settings, env),
                                 stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(f"http://127.0.0.1:{port}", popen, log_path)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        if log_dir is None:
            log_path.unlink(missing_ok=True)


def _wait_ready(server: ServerProcess, timeout: float) -> None:
    assert server.popen is not None
    deadline = time.monotonic() + timeout
    answer = "no answer"
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            if server.popen.poll() is not None:
                raise RuntimeError(f"the server exited with {server.popen.returncode} during startup:\n"
                                   f"{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                response = client.get(f"{server.url}/readyz")
                if response.status_code == 200:
                    return
                answer = f"{response.status_code} {response.text[:300]}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready after {timeout:.0f} s (last /readyz: {answer}):\n"
                                   f"{server.log_tail()}")
            time.sleep(0.2)
