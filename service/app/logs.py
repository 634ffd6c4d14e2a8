"""Structured logging: one line per event, JSON or text, always carrying the request id.

The id comes from the X-Request-ID header (or is generated) in the middleware and lives in a context
variable, so every log line emitted while serving a request, in any module, can be correlated.

Every message is one line: control characters in it (a path with %0a, a header value, anything a
request puts in a log line) are written as escapes (`\\x0a`), and text-format tracebacks are indented,
so no client can forge a line that looks like another event.

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
import re
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


#: C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: what can end or fake a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """`text` with every control character written as a visible escape (`\\x0a`, `\\u2028`)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


class TextFormatter(logging.Formatter):
    """The text format, with traceback lines indented: none starts a line as an event would."""

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        return _indent(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text and not record.exc_text.startswith("  "):
            record.exc_text = _indent(record.exc_text)
        return super().format(record)


def _indent(text: str) -> str:
    return "\n".join("  " + escape_controls(line) for line in text.splitlines())


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
        self._flush_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while self.buffer:
            try:
                record = self.buffer.popleft()
            except IndexError:  # drained by the other thread meanwhile
                return
            self.target.handle(record)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()  # StreamHandler flushes after every record: nothing more to do

    def flush(self) -> None:
        """Write what is buffered now, from the calling thread (at shutdown: nothing may be left)."""
        with self._flush_lock:
            self._drain()


class BufferHandler(logging.handlers.QueueHandler):
    """Put the record itself on the writer's buffer: its formatter (JSON extras included) runs there."""

    def __init__(self, writer: BufferedWriter) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # enqueue is overridden: no queue object
        self._buffer = writer.buffer

    def enqueue(self, record: logging.LogRecord) -> None:
        self._buffer.append(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # the arguments may change after this call; control characters from a request end up escaped
        record.msg, record.args = escape_controls(record.getMessage()), None
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
        stream.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    _writer = BufferedWriter(stream)
    handler = BufferHandler(_writer)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())  # runs in the logging call's thread, where the request's context is
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def flush_logs() -> None:
    """Write every buffered line now (the app's shutdown and `python -m service` call it on the way out)."""
    if _writer is not None:
        _writer.flush()


@atexit.register
def _flush_logs() -> None:
    if _writer is not None:
        _writer.stop()
