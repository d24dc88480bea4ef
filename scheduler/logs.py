"""Logging setup: levels, the text and JSON formats, and a last line of defence
against secrets in log output.

Levels (``--log-level``, ``[logging] level``): ``trace``, ``debug``, ``info``,
``warning``, ``error``. What each shows:

* ``info``: what an operator follows (connections up/down, tasks started/finished,
  reloads, shutdown);
* ``debug``: also this service's own debug lines, and one line per HTTP request
  (httpx's ``HTTP Request: POST ... "HTTP/1.1 200 OK"``, which httpx logs at INFO and
  which are shown here as DEBUG: at ``info`` they would be most of the output);
* ``trace``: also the libraries' internals (httpcore's connection and h11 events,
  httpx's own debug lines, hypercorn): about fifteen lines per request, for debugging
  the HTTP layer itself. At ``debug`` they are not even created (their loggers are
  set above DEBUG), so ``debug`` costs little more than ``info``.

Formats (``--log-format``, ``[logging] format``): ``text``, one line per record
(``2025-01-31T12:00:00.123+01:00 INFO    scheduler.connection: ...``, followed by
`` [repository=owner/repo job=build]`` on a task's lines), or ``json``, one JSON
object per line with ``ts``, ``level``, ``logger``, ``message`` and, where known,
``connection``, ``task_id``, ``repository``, ``job`` (see :mod:`scheduler.logcontext`)
and ``exception``. Timestamps are ISO 8601 in local time with the UTC offset.

The code never formats a token into a message; :class:`RedactingFilter` makes sure
that a token that slips in anyway (an exception text from a library, a URL) is masked
before any handler writes it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable
from typing import TextIO

from scheduler.logcontext import FIELDS, ContextFilter, record_fields

MASK = "***"

#: Below DEBUG: the libraries' internals.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS: dict[str, int] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("text", "json")
DEFAULT_LEVEL = "info"
DEFAULT_FORMAT = "text"

#: Loggers of libraries whose DEBUG lines are internals: shown only at ``trace``
#: (their warnings and errors always).
INTERNAL_LOGGERS = ("httpcore", "h11", "h2", "hpack", "hypercorn")
#: httpx: its INFO request lines are shown at ``debug``, its DEBUG lines at ``trace``.
HTTPX_LOGGER = "httpx"


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked = self._mask(text)
        if masked != text:
            record.msg, record.args = masked, None
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        for key in FIELDS:  # a repository or job name is text from the server
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, self._mask(value))
        return True

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class _HttpxLevels(logging.Filter):
    """httpx's request lines (INFO) count as DEBUG here, its DEBUG lines as TRACE."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        elif record.levelno == logging.DEBUG:
            record.levelno, record.levelname = TRACE, "TRACE"
        return True


_HTTPX_LEVELS = _HttpxLevels()


def iso_time(record: logging.LogRecord) -> str:
    """The record's time, ISO 8601 with date, milliseconds and UTC offset (local time)."""
    stamp = dt.datetime.fromtimestamp(record.created).astimezone()
    return stamp.isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``<ISO time> <LEVEL> <logger>: <message>``, a task's repository and job after it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = record_fields(record)
        shown = [f"{k}={fields[k]}" for k in ("repository", "job") if k in fields]
        return f"{text} [{' '.join(shown)}]" if shown else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": iso_time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out)


def make_handler(
    level: str = DEFAULT_LEVEL,
    fmt: str = DEFAULT_FORMAT,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """The one handler of the process: context fields, then secrets masked, then
    formatted; records below ``level`` (httpx's, once re-levelled) are dropped."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setLevel(level_number(level))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    return handler


def level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}"
        ) from None


def setup_logging(
    level: str = DEFAULT_LEVEL,
    secrets: Iterable[str] = (),
    fmt: str = DEFAULT_FORMAT,
    stream: TextIO | None = None,
) -> None:
    """Send every record at ``level`` and above to stderr (or ``stream``) in ``fmt``,
    replacing any handler set up before (so it can be called again once the config,
    and with it the tokens to mask, is known)."""
    number = level_number(level)
    handler = make_handler(level, fmt, secrets, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in INTERNAL_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if number <= TRACE else logging.WARNING)
    httpx = logging.getLogger(HTTPX_LOGGER)
    if number <= TRACE:
        httpx.setLevel(logging.NOTSET)
    elif number <= logging.DEBUG:
        httpx.setLevel(logging.INFO)  # its DEBUG lines are not even created
    else:
        httpx.setLevel(logging.WARNING)
    if _HTTPX_LEVELS not in httpx.filters:
        httpx.addFilter(_HTTPX_LEVELS)
