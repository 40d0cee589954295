"""What the two schemathesis suites share: lowering costly values the schema allows, and an
in-process client that has waited for the model."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from schemathesis.python import asgi


def cap_body(body: Any, caps: dict[str, tuple[int, int, int]]) -> Any:
    """Values in [lo, hi] are lowered to at most `cap` (they stay valid, so the same code
    paths run); out-of-range values (negative tests) are left exactly as generated."""
    if isinstance(body, dict):
        for key, (lo, hi, cap) in caps.items():
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
                body[key] = min(value, cap)
            elif isinstance(value, str) and value.isdigit() and lo <= int(value) <= hi:
                body[key] = str(min(int(value), cap))
    return body


@contextlib.contextmanager
def healthy_client(app: Any) -> Iterator[Any]:
    """schemathesis' ASGI client, which runs the app's lifespan, once /health is 200."""
    with asgi.get_client(app) as c:
        deadline = time.monotonic() + 60
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "model did not load"
            time.sleep(0.05)
        yield c
