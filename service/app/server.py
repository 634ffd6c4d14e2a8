"""The HTTP server around the app: uvicorn, with the limits it lacks for hostile clients.

Stock uvicorn (httptools) buffers a request head of any size (a 100 MB header on GET /healthz was read
and parsed, stalling the loop for seconds), has no deadline for a head or a body still arriving (a client
sending one header line every few seconds held its connection for ever), and accepts every connection.
`GuardedHttpToolsProtocol` adds, per connection:

- a cap on the head (request line + headers, AEC_MAX_HEADER_BYTES): counted as bytes arrive, *before*
  the parser buffers them, answered 431 and closed;
- a head deadline (AEC_HEADER_TIMEOUT_S) from the connection's opening or the first byte of a request
  to the end of its headers: 408 and closed;
- a body deadline backstop (AEC_BODY_TIMEOUT_S + 1 s) for bodies nobody reads (the routes that read a
  body answer 408 `body_timeout` themselves, `service.app.uploads`);
- a cap on open connections (AEC_MAX_CONNECTIONS): one more is answered 503 and closed before anything
  is parsed.

Why not another server: granian (hyper) caps heads (431) and times them out, but has no body deadline,
runs the app in a spawned worker process (the process a supervisor or test watches is not the one
holding the models), and measured no faster here: /reconstruct at concurrency 64 on 2 cores,
bench/serve.py --client raw, two rounds each: uvicorn 515 and 569 img/s, granian 452 and 503 img/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.app.config import Settings
from service.app.logs import flush_logs

log = logging.getLogger("service.server")

#: The end of a request head.
_HEAD_END = b"\r\n\r\n"
#: After refusing a request, how long (and how many bytes) the connection drains before it closes.
LINGER_S = 2.0
LINGER_BYTES = 4 * 1024 * 1024


def _response(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer in the service's error shape, written before the app ever sees the request."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size, head and body deadlines and a connection cap."""

    max_head_bytes: int = 32 * 1024
    head_timeout_s: float = 10.0
    body_timeout_s: float = 61.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # between requests, or inside a head
        self._head_bytes = 0
        self._head_tail = b""  # last bytes seen, to find a head end split across reads
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._draining, self._drained = False, 0

    # ---- connections ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(_response(503, "too_many_connections",
                                      f"the server holds its limit of {self.max_connections} connections; retry later"))
            transport.close()
            return
        super().connection_made(transport)
        self._arm(self.head_timeout_s, 408, "header_timeout",
                  f"the request headers did not arrive within {self.head_timeout_s:g} s")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    # ---- the head --------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._draining:  # answered and closing: drop what still arrives, up to a bound
            self._drained += len(data)
            if self._drained > LINGER_BYTES:
                self.transport.close()
            return
        if self._awaiting_head:
            if self._deadline is None:  # the first byte of a request on a kept-alive connection
                self._arm(self.head_timeout_s, 408, "header_timeout",
                          f"the request headers did not arrive within {self.head_timeout_s:g} s")
            window = self._head_tail + data
            end = window.find(_HEAD_END)
            size = self._head_bytes + (end + len(_HEAD_END) - len(self._head_tail) if end >= 0 else len(data))
            if size > self.max_head_bytes:
                self._refuse(431, "headers_too_large",
                             f"the request line and headers exceed {self.max_head_bytes} bytes")
                return
            if end < 0:
                self._head_bytes = size
                self._head_tail = window[-(len(_HEAD_END) - 1):]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_head, self._head_bytes, self._head_tail = False, 0, b""
        self._arm(self.body_timeout_s, 408, "body_timeout",
                  f"the request body did not arrive within {self.body_timeout_s:g} s")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._awaiting_head = True  # the next bytes are the next request's head (uvicorn's keep-alive
        # timer covers the idle time; ours starts at its first byte)

    # ---- deadlines ------------------------------------------------------------------------------------
    def _arm(self, seconds: float, status: int, code: str, message: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, status, code, message)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, status: int, code: str, message: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started and not self._awaiting_head:
            # this request was answered (or is being answered) while its body still trickles in:
            # a second response would be out of place, so just close
            log.info("closing connection from %s: %s", _peer(self.client), message)
            self.transport.close()
            return
        self._refuse(status, code, message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        log.info("closing connection from %s: %s", _peer(self.client), message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() sees http.disconnect
            self.cycle.message_event.set()
        self.transport.write(_response(status, code, message))
        self._linger()

    def _linger(self) -> None:
        """Send the answer and a FIN, then read and drop what the client still sends for a moment before
        closing: closing a socket with unread bytes in it sends a reset, and a client still sending (the
        rest of a 1 MB header) would then lose the 431 it was sent."""
        self._draining, self._drained = True, 0
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self._disarm()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown"


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this deployment's limits (uvicorn builds one instance per connection)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {
        "max_head_bytes": settings.max_header_bytes,
        "head_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s + 1.0,
        "max_connections": settings.max_connections,
    })


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration `python -m service` runs (tests reuse it, so they test the same server)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "workers": 1,
        "http": guarded_protocol(settings),
        "log_config": None,  # our handler (service.app.logs) formats uvicorn's lines too
        "access_log": False,  # the middleware logs each request with its request id
        "timeout_graceful_shutdown": settings.shutdown_timeout_s or None,
    }
    return uvicorn.Config(app, **(options | overrides))


class Server(uvicorn.Server):
    """uvicorn.Server that, after a graceful shutdown on SIGTERM/SIGINT, returns instead of re-raising the
    signal: uvicorn re-raises it so the process dies "killed by SIGTERM" (exit 143), skipping atexit,
    which lost the buffered access log's last lines. Here the logs are flushed and `main` exits 0."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # handled by shutting down gracefully: nothing to re-raise


#: glibc's mallopt parameter for the size from which allocations are mmap'ed.
_M_MMAP_THRESHOLD = -3


def tune_allocator(threshold: int = 1 << 20) -> bool:
    """Serve allocations of `threshold` bytes or more from mmap, so freeing one returns it to the OS.

    Why: glibc raises its mmap threshold dynamically (up to 32 MiB) once a big block is freed, and from
    then on serves multi-megabyte blocks (decoded images, PNG buffers) from its heaps and per-thread
    arenas, which keep the pages: RSS climbed by hundreds of MiB under a mix of big and small requests
    and stayed there. Setting the threshold explicitly also turns the dynamic raise off. False where the
    C library has no mallopt (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def serve(app: Any, settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; 0 after a graceful shutdown, 1 if the server could not start."""
    server = Server(server_config(app, settings))
    server.run()
    flush_logs()
    return 0 if server.started else 1
