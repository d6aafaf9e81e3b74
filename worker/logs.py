"""Logging as one JSON object per line: what CloudWatch Logs Insights and operators query.

Fields given with ``extra={...}`` become top-level keys (job_id, message_id, user_id,
document_id, receive_count, ...). ``configure_logging`` is idempotent.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

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
        return json.dumps(entry, default=str)


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
