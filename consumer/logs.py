"""Log handler setup for the entry points: plain text or one JSON object per line, credentials masked."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from model.serving.redaction import redact


class TextFormatter(logging.Formatter):
    """`time level logger: message`, with the credentials of any URI masked (see `redact`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # The last line of defence: call sites redact what they log, but an exception message or a
        # traceback from a library (MLflow quotes its tracking URI) is only seen here.
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra` fields such as topic/partition/offset are kept. Credentials
    in the message, the exception and string fields are masked (see `redact`)."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD:
                payload[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Installs one stderr handler on the root logger (entry points only)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
