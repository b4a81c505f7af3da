"""Log formats for programs that run tickerq: one JSON object per line, or text with fields.

tickerq logs on loggers under ``tickerq`` (the engine's job records on
``tickerq.engine``) and never configures logging itself: an app that embeds
it decides where records go and at which level. The ``tickerq`` command is a
program, so it does: ``tickerq run --log-format json|text --log-level LEVEL``
calls :func:`configure`. A program of your own may use the same formatters::

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])

Job records carry their fields as ``extra`` attributes of the record:
``action`` (``job_started``, ``job_succeeded``, ``job_retry``, ``job_failed``,
``job_cancelled``, ...), ``function``, ``ticker_id``, ``attempt`` (1 for the
first run), ``node`` and, once a run ended, ``duration_ms``. Both formatters
show every such field; a field that is not JSON is shown as its ``str``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "TextFormatter", "configure", "fields"]

LOG_FORMATS: Final = ("text", "json")
"""What ``--log-format`` accepts."""
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""What ``--log-level`` accepts."""

_RECORD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}
"""Attributes every record has; the others came in ``extra``."""

_BASE_KEYS: Final = ("time", "level", "logger", "message")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of ``record``, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``, then the record's extra fields, then ``traceback`` (with
    ``exc_info``) and ``stack`` (with ``stack_info``). An extra field named
    like one of the first four is left out; values that are not JSON are
    written as their ``str``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields(record).items():
            if key not in _BASE_KEYS:
                entry[key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            entry["traceback"] = record.exc_text
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message  key=value ...``, then the traceback, if any.

    Values with spaces, quotes or ``=`` are quoted (JSON string syntax).
    """

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        extra = fields(record)
        if not extra:
            return text
        return text + "  " + " ".join(f"{k}={_text_value(v)}" for k, v in extra.items())


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


_installed: logging.Handler | None = None
"""The handler :func:`configure` put on the root logger (replaced when called again)."""


def configure(
    level: str | int = logging.INFO, fmt: str = "text", *, stream: IO[str] | None = None
) -> logging.Handler | None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``fmt``
    (``"text"`` or ``"json"``), through one handler on the root logger.

    For a program's entry point (the ``tickerq`` command calls it), never for
    a library. Like :func:`logging.basicConfig`, it does nothing when the root
    logger already has handlers that it did not install (logging is someone
    else's then); called again, it replaces its own handler. Returns the
    handler, or None when it did nothing. ValueError for an unknown format or level.
    """
    global _installed  # noqa: PLW0603  # one root logger per process
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if isinstance(level, str):
        name = level.upper()
        if name not in LOG_LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
        level = logging.getLevelNamesMapping()[name]
    root = logging.getLogger()
    if any(h is not _installed for h in root.handlers):
        return None
    if _installed is not None:
        root.removeHandler(_installed)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) in the same format
    _installed = handler
    return handler
