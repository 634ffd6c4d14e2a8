"""Structured logging: one line per event, JSON or text, always carrying the request id.

The id comes from the X-Request-ID header (or is generated) in the middleware and lives in a context
variable, so every log line emitted while serving a request, in any module, can be correlated.

The event loop only builds each record and puts it on a queue (`QueueHandler`, with the request id
stamped on it while the context variable is still set); a listener thread formats and writes it, so
an access line per request costs the loop microseconds instead of a format and a blocking write.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import time
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "color_message"}
_HANDLER_MARK = "_aec_handler"


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


_listener: logging.handlers.QueueListener | None = None


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Install (or replace) our handler on the root logger; other handlers (pytest's) are left alone."""
    global _listener
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    if _listener is not None:
        _listener.stop()  # flushes what is queued
    writer = logging.StreamHandler()
    if fmt == "json":
        writer.setFormatter(JsonFormatter())
    else:
        writer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _KeepRecordQueueHandler(records)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())  # runs in the logging thread, where the request's context is
    _listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


class _KeepRecordQueueHandler(logging.handlers.QueueHandler):
    """Enqueue the record itself: the writer's formatter (JSON extras included) runs in the listener."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None  # the arguments may change after this call
        if record.exc_info:  # tracebacks cannot cross threads later: render them now
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


@atexit.register
def _flush_logs() -> None:
    if _listener is not None:
        _listener.stop()
