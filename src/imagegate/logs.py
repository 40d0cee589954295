"""Structured logs: one JSON object a line (IMAGEGATE_LOG_FORMAT=json), each carrying the
id of the request it was written for. The id lives in a context variable set by the
request middleware (app.py), so every line logged while a request is handled, by any
logger (ours, uvicorn's, a library's), carries it without being passed around."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("imagegate_request_id", default=None)

# LogRecord's own attributes: whatever else a record carries came from `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id` (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def apply_format(config: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A logging dictConfig (uvicorn's) with every formatter replaced by JSON lines when
    `fmt` is "json"; every handler gets the request-id filter either way."""
    config.setdefault("filters", {})["request_id"] = {"()": RequestIdFilter}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("request_id")
    if fmt == "json":
        config["formatters"] = {name: {"()": JsonFormatter} for name in config.get("formatters", {})}
    return config
