"""Structured logging: one line per event, JSON or text, always carrying the request id.

The id comes from the X-Request-ID header (or is generated) in the middleware and lives in a context
variable, so every log line emitted while serving a request, in any module, can be correlated.

The event loop only builds each record and appends it to a buffer (with the request id stamped on it
while the context variable is still set); a writer thread wakes every `FLUSH_INTERVAL_S`, formats and
writes what has gathered. So an access line per request costs the loop microseconds instead of a format
and a blocking write, and the writer does not wake (and take the GIL) once per record, which a
`QueueHandler`/`QueueListener` pair does: ~10% of the loop's CPU under load (py-spy, bench/serve.py).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import logging.handlers
import threading
import time
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "color_message"}
_HANDLER_MARK = "_aec_handler"
#: How long a log line may wait in the buffer before the writer thread writes it.
FLUSH_INTERVAL_S = 0.05
#: Log records held while the output is blocked; beyond it the oldest are dropped.
MAX_BUFFERED = 100_000


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id", ...extra}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered before the record crossed threads (see setup_logging)
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str)


class BufferedWriter:
    """Hands records to `target` (a formatting, writing handler) from its own thread, in batches.

    `buffer` is a deque: appending is atomic and wakes nobody; the thread drains it every `interval`
    seconds, and `stop()` drains what is left (so nothing logged before exit is lost). It is bounded:
    if the output blocks (a full pipe) the oldest lines are dropped rather than the process's memory.
    """

    def __init__(self, target: logging.Handler, interval: float = FLUSH_INTERVAL_S) -> None:
        self.target, self.interval = target, interval
        self.buffer: collections.deque[logging.LogRecord] = collections.deque(maxlen=MAX_BUFFERED)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while self.buffer:
            self.target.handle(self.buffer.popleft())

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()  # StreamHandler flushes after every record: nothing more to do


class BufferHandler(logging.handlers.QueueHandler):
    """Put the record itself on the writer's buffer: its formatter (JSON extras included) runs there."""

    def __init__(self, writer: BufferedWriter) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # enqueue is overridden: no queue object
        self._buffer = writer.buffer

    def enqueue(self, record: logging.LogRecord) -> None:
        self._buffer.append(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None  # the arguments may change after this call
        if record.exc_info:  # tracebacks cannot cross threads later: render them now
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_writer: BufferedWriter | None = None


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Install (or replace) our handler on the root logger; other handlers (pytest's) are left alone."""
    global _writer
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    if _writer is not None:
        _writer.stop()  # writes what is buffered
    stream = logging.StreamHandler()
    if fmt == "json":
        stream.setFormatter(JsonFormatter())
    else:
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    _writer = BufferedWriter(stream)
    handler = BufferHandler(_writer)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())  # runs in the logging call's thread, where the request's context is
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


@atexit.register
def _flush_logs() -> None:
    if _writer is not None:
        _writer.stop()
