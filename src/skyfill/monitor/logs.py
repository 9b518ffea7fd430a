"""Structured logs: one JSON object per line off a terminal, a readable line on one.

Every record carries `ts` (ISO 8601, UTC), `level`, `event` (a stable snake_case name,
e.g. `job_started`, `task_done`, `did_done`, `rate_limited`, `progress`) and `msg`, plus
whatever is known of `job_id`, `task_id`, `did` and `host`: from the record's own
`extra=` fields, else from the context bound with `telemetry.logcontext.bind()` (each
asyncio task - one job, one engine task, one DID - carries its own).

    log.info("job started", extra={"event": "job_started", "items": 300})
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from skyfill.errors import UsageError
from skyfill.telemetry.logcontext import CONTEXT_FIELDS, current

LEVELS = ("debug", "info", "warning", "error")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "event"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: context first, the record's extras over them."""
    fields: dict[str, Any] = dict(current())
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    return fields


class ContextFilter(logging.Filter):
    """Stamps the bound context on the record when it is made (in the logging task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name.rsplit(".", 1)[-1],
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            if value is not None or key not in CONTEXT_FIELDS:
                line.setdefault(key, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01 info  task_done task_id=task-0003 rows=812  task done`."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        event = getattr(record, "event", None) or record.name.rsplit(".", 1)[-1]
        fields = " ".join(
            f"{k}={v}" for k, v in record_fields(record).items() if k not in ("job_id", "msg")
        )
        return f"{when} {record.levelname.lower():<7} {event} {fields}  {record.getMessage()}"


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time (a live progress display swaps it
    for a proxy that prints above the bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def parse_level(name: str) -> int:
    if name.lower() not in LEVELS:
        raise UsageError(f"log level {name!r}: use one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


def configure_logging(level: str = "info", json_lines: bool | None = None) -> None:
    """Send skyfill's records at `level` and above to stderr: JSON lines unless stderr is
    a terminal (or `json_lines` says otherwise). Replaces an earlier configuration."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    logger = logging.getLogger("skyfill")
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(parse_level(level))
    logger.propagate = False
