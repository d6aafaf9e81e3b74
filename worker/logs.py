"""Logging as one JSON object per line: what CloudWatch Logs Insights and operators query.

Fields given with ``extra={...}`` become top-level keys (job_id, message_id, user_id,
document_id, receive_count, ...). ``configure_logging`` is idempotent.

Lines are capped: the awslogs driver splits a line over 16 KiB into several events, which breaks
one-JSON-object-per-line. Each text field keeps its first ``MAX_FIELD_CHARS`` characters (a
traceback more); what is cut is said. The whole of a dead-letter reason stays in the DLQ message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

MAX_LINE_BYTES = 15_000
MAX_FIELD_CHARS = 2_000
MAX_EXCEPTION_CHARS = 8_000

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps({key: _cap(value, MAX_EXCEPTION_CHARS if key == "exception" else MAX_FIELD_CHARS)
                           for key, value in entry.items()}, default=str)
        if len(line.encode()) > MAX_LINE_BYTES:  # many long fields: keep a little of each
            line = json.dumps({key: _cap(value if isinstance(value, str | int | float | bool) else str(value), 200)
                               for key, value in entry.items()}, default=str)
        if len(line.encode()) > MAX_LINE_BYTES:  # still too long (escapes count six bytes a character)
            line = json.dumps({key: _cap(entry[key], 200) for key in ("time", "level", "logger", "message")}
                              | {"truncated": True})
        return line


def _cap(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... [{len(value) - limit} more characters]"
    if isinstance(value, list | tuple) and len(str(value)) > limit:
        return _cap(str(value), limit)
    return value


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Send every logger's records, as JSON lines, to ``stream`` (stderr by default)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ml_worker", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._ml_worker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "sentence_transformers", "transformers", "filelock",
                  "werkzeug", "moto", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
