from __future__ import annotations

import json
import logging

from consumer.logs import JsonFormatter
from consumer.records import InputRecord


def test_json_log_line_carries_kafka_coordinates() -> None:
    record = InputRecord("overviews", 4, 1234, None, b"x")
    line = logging.LogRecord("consumer.service", logging.WARNING, __file__, 1, "dead-lettered %s", ("x",), None)
    for key, value in {**record.log_fields, "reason": "invalid_json"}.items():
        setattr(line, key, value)
    payload = json.loads(JsonFormatter().format(line))
    assert payload["message"] == "dead-lettered x" and payload["level"] == "WARNING"
    assert (payload["topic"], payload["partition"], payload["offset"]) == ("overviews", 4, 1234)
    assert payload["reason"] == "invalid_json" and payload["ts"].endswith("+00:00")


def test_json_log_includes_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        line = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    payload = json.loads(JsonFormatter().format(line))
    assert "ValueError: boom" in payload["exception"]
