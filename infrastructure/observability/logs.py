"""Logs: `LOWROUTER_LOG_FORMAT=text` (default, for a terminal) or `json` (one object per line on
stderr, for log shippers). One configuration for every process (`serve`, its workers through
uvicorn's `log_config`, the background process) and every logger (ours, uvicorn's, libraries').

Every line carries the request's id when it was written while serving one. A token never
reaches a line: the request line has only the key's display form, and as a last guard anything
shaped like a token is cut to its display form before a line is written.
"""

import logging
import logging.config
import os
import re
import sys
import threading
import time
from typing import Any

import orjson

from domain.tokens import display_of
from infrastructure.observability.context import CURRENT

TOKEN_SHAPE = re.compile(r"lr-(?:sk|mk)-[0-9A-Za-z]{38}")
# What every LogRecord has; anything else on a record came as `extra=` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str) -> str:
    if "lr-" not in text:
        return text
    return TOKEN_SHAPE.sub(lambda match: display_of(match.group(0)), text)


def _time(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _request_id(record: logging.LogRecord) -> str | None:
    given = getattr(record, "request_id", None)
    if given is not None:
        return str(given)
    observation = CURRENT.get()
    return observation.request_id if observation is not None else None


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "pid", "message", "request_id"?, …extra fields,
    "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker (or the background process) wrote it
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            data["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in data:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        return redact(orjson.dumps(data, default=str).decode())


class TextFormatter(logging.Formatter):
    """`2026-12-01T09:33:00.123Z INFO lowrouter.access [req_…] message`."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = _request_id(record)
        where = f" [{request_id}]" if request_id else ""
        line = f"{_time(record)} {record.levelname} {record.name}{where} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def logging_config(log_format: str) -> dict[str, Any]:
    """A dictConfig for `log_format`; uvicorn applies it in each worker it starts."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"lowrouter": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "lowrouter",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "lowrouter": {"level": "INFO"},
            # Ours is the one request line; uvicorn's access log stays off.
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }


def configure_logging(log_format: str) -> None:
    """For a process's entry point (never for an app built inside a test)."""
    logging.config.dictConfig(logging_config(log_format))
    logging.captureWarnings(True)
    if log_format == "json":
        # Uncaught errors would print plain tracebacks: log them as JSON lines instead.
        crashes = logging.getLogger("lowrouter.crash")

        def thread_crashed(hook: threading.ExceptHookArgs) -> None:
            if hook.exc_type is not None and hook.exc_value is not None:
                crashes.critical(
                    "uncaught error in thread %s",
                    hook.thread.name if hook.thread else "?",
                    exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback),
                )

        def process_crashed(kind: Any, value: Any, trace: Any) -> None:
            crashes.critical("uncaught error", exc_info=(kind, value, trace))

        threading.excepthook = thread_crashed
        sys.excepthook = process_crashed


class RequestLog:
    """The one line per request, written straight to stderr: one write(2) per line.

    The logging module costs tens of microseconds a line (a LogRecord, handler locks, the
    formatter's generic field walk): too much for every request of the hot path. The line has
    the same shape as every other line of its format. Its fields are ids, the key's display
    form and figures; only the path comes from the client, so only it is redacted."""

    def __init__(self, log_format: str, fd: int = 2) -> None:
        self._json = log_format == "json"
        self._fd = fd
        self._second = -1
        self._stamp = ""

    def write(self, fields: dict[str, Any]) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = f"{self._stamp}.{int((now - second) * 1000):03d}Z"
        path = fields["path"]
        if "lr-" in path:
            fields["path"] = path = redact(path)
        summary = f"{fields['method']} {path} {fields['status']}"
        if self._json:
            line = orjson.dumps(
                {
                    "time": stamp,
                    "level": "info",
                    "logger": "lowrouter.access",
                    "pid": os.getpid(),
                    "message": summary,
                    "event": "request",
                    **fields,
                }
            )
        else:
            line = (
                f"{stamp} INFO lowrouter.access [{fields['request_id']}] {summary} "
                f"{fields['latency_ms']}ms overhead={fields['overhead_ms']}ms "
                f"key={fields['key']} model={fields['model']} provider={fields['provider']} "
                f"cost={fields['cost']} client={fields['client_ip']}"
            ).encode()
        line += b"\n"
        while line:
            written = os.write(self._fd, line)
            line = line[written:]
