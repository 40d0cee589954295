"""Structured logs: JSON lines carrying the request id of the request they were written for."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

from imagegate.logs import JsonFormatter, RequestIdFilter
from imagegate.server import log_config


def test_json_log_config_formats_every_handler_as_json() -> None:
    config = log_config("info", "json")
    assert all(f["()"] is JsonFormatter for f in config["formatters"].values())
    assert all("request_id" in h["filters"] for h in config["handlers"].values())
    plain = log_config("info")
    assert all(f.get("()") is not JsonFormatter for f in plain["formatters"].values())


async def test_every_line_of_a_request_carries_its_id(app: Any, client: Any) -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("imagegate")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        raw = await client.images.with_raw_response.generate(prompt="x", size="256x256")
        # outside any request: no id
        logging.getLogger("imagegate.test").info("between requests")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    access = [ln for ln in lines if ln["logger"] == "imagegate.access"]
    assert access and access[0]["request_id"] == raw.headers["x-request-id"]
    assert access[0]["level"] == "info" and "POST /v1/images/generations" in access[0]["message"]
    assert lines[-1]["message"] == "between requests" and lines[-1]["request_id"] is None
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("imagegate", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
        record.exc_info = sys.exc_info()
        record.key_id = "key_1"
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed x" and "ValueError: boom" in out["exception"] and out["key_id"] == "key_1"
